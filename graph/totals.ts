/**
 * What a walk counted, as plain JSON that sums: the totals of two pages, two slices or two
 * attempts' completed repos add up to the totals of walking both at once, because a walk's
 * visited set is per root (see engine.ts).
 */
import type { NodeType } from './schema.ts';

export interface TypeTotals {
  /** Nodes stepped (loaded and their edges found). */
  walked: number;
  /** Stepped nodes that were sampled, so the walk's checks ran on them. */
  checked: number;
  /** Edges found to walked node types (before the visited set drops the ones seen). */
  children: number;
  /** Payload bytes loaded. */
  bytes: number;
  /** Steps that failed (recorded as findings with errorAsData). */
  errors: number;
}

export interface WalkTotals {
  /** Roots walked to the end. */
  roots: number;
  nodes: number;
  bytes: number;
  types: Partial<Record<NodeType, TypeTotals>>;
  /** Findings by `check:severity`. */
  findings: Record<string, number>;
  /** Walk-specific counters (`scrub.repaired`, `compression.Record.zstd`, …). */
  counters: Record<string, number>;
}

export function emptyTotals(): WalkTotals {
  return { roots: 0, nodes: 0, bytes: 0, types: {}, findings: {}, counters: {} };
}

export function emptyTypeTotals(): TypeTotals {
  return { walked: 0, checked: 0, children: 0, bytes: 0, errors: 0 };
}

/** Adds `b` into `a` and returns `a`. */
export function addTotals(a: WalkTotals, b: WalkTotals): WalkTotals {
  a.roots += b.roots;
  a.nodes += b.nodes;
  a.bytes += b.bytes;
  for (const [type, t] of Object.entries(b.types) as [NodeType, TypeTotals][]) {
    const into = (a.types[type] ??= emptyTypeTotals());
    into.walked += t.walked;
    into.checked += t.checked;
    into.children += t.children;
    into.bytes += t.bytes;
    into.errors += t.errors;
  }
  for (const [k, n] of Object.entries(b.findings)) a.findings[k] = (a.findings[k] ?? 0) + n;
  for (const [k, n] of Object.entries(b.counters)) a.counters[k] = (a.counters[k] ?? 0) + n;
  return a;
}

export function sumTotals(parts: Iterable<WalkTotals>): WalkTotals {
  const sum = emptyTotals();
  for (const p of parts) addTotals(sum, p);
  return sum;
}

/** Findings of `totals` with the given severity, summed over checks. */
export function findingCount(totals: WalkTotals, severity?: 'error' | 'warn' | 'info'): number {
  let n = 0;
  for (const [k, c] of Object.entries(totals.findings)) if (!severity || k.endsWith(`:${severity}`)) n += c;
  return n;
}
