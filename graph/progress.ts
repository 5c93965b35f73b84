/**
 * One progress line for every walk type, the same shape every few seconds and once at the end:
 *
 *   walk validate: 5.0s 412,345 nodes 82,469/s 61.2 MB 12.2 MB/s 12 repos 3 findings | Repo 12/12/80,412 Commit 12/12/24 …
 *
 * After the bar: per node type walked/checked/children.
 */
import { NODE_TYPES } from './schema.ts';
import { findingCount, type WalkTotals } from './totals.ts';

export interface ProgressSnapshot {
  label: string;
  elapsedMs: number;
  totals: WalkTotals;
  /** Final summary rather than a progress tick. */
  done?: boolean;
}

export function formatProgress(s: ProgressSnapshot): string {
  const t = s.totals;
  const secs = Math.max(s.elapsedMs / 1000, 1e-3);
  const types = NODE_TYPES.flatMap((type) => {
    const x = t.types[type];
    return x ? [`${type} ${n(x.walked)}/${n(x.checked)}/${n(x.children)}${x.errors ? ` (${n(x.errors)} failed)` : ''}`] : [];
  });
  const findings = findingCount(t);
  return (
    `${s.label}${s.done ? ' done' : ''}: ${(s.elapsedMs / 1000).toFixed(1)}s ${n(t.nodes)} nodes ${n(Math.round(t.nodes / secs))}/s ` +
    `${bytes(t.bytes)} ${bytes(t.bytes / secs)}/s ${n(t.roots)} roots ${n(findings)} findings | ${types.join(' ')}`
  );
}

/** The findings of `totals` by check, `check:severity=count, …`, for a summary. */
export function formatFindings(t: WalkTotals): string {
  const entries = Object.entries(t.findings).sort(([a], [b]) => (a < b ? -1 : 1));
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(', ') : 'none';
}

function n(x: number): string {
  return Math.round(x).toLocaleString('en-US');
}

function bytes(x: number): string {
  if (x < 1024) return `${Math.round(x)} B`;
  if (x < 1024 ** 2) return `${(x / 1024).toFixed(1)} kB`;
  if (x < 1024 ** 3) return `${(x / 1024 ** 2).toFixed(1)} MB`;
  return `${(x / 1024 ** 3).toFixed(2)} GB`;
}
