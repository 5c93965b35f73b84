/**
 * The counters activities add to (imports, walk nodes, findings), in one process-wide registry.
 * They count whether or not this process serves metrics; the worker's `/metrics`
 * (`workers/metrics.ts`) exposes the registry. Every name is documented in README.md ("Operating").
 */
import { Counter, Registry } from 'prom-client';
import type { RepoOutcome } from '../backfill/settings.ts';
import type { WalkTotals } from '../graph/totals.ts';

/** Counters every activity in this process adds to, and Node's process metrics. */
export const processRegistry = new Registry();

const imports = new Counter({
  name: 'repowalk_imports_total',
  help: 'Repo import attempts by outcome (imported, skipped, gone, deleted, dropped, retry); retries by resync kind.',
  labelNames: ['outcome', 'resync'] as const,
  registers: [processRegistry],
});
const importedBlocks = new Counter({
  name: 'repowalk_import_new_blocks_total',
  help: 'Blocks stored by imports (new to the mirror).',
  registers: [processRegistry],
});
const importedPackBytes = new Counter({
  name: 'repowalk_import_pack_bytes_total',
  help: 'Bytes of packs written by imports.',
  registers: [processRegistry],
});
const walkNodes = new Counter({
  name: 'repowalk_walk_nodes_total',
  help: 'Nodes a walk stepped, by walk type and node type.',
  labelNames: ['walk_type', 'node_type'] as const,
  registers: [processRegistry],
});
const walkFindings = new Counter({
  name: 'repowalk_walk_findings_total',
  help: 'Findings walks recorded, by walk type, check and severity.',
  labelNames: ['walk_type', 'check', 'severity'] as const,
  registers: [processRegistry],
});

/** Counts one import attempt (`backfillRepoOnce`, each repo of `backfillMany`). */
export function recordImport(outcome: Pick<RepoOutcome, 'kind'> & { resync?: string; newBlocks?: number; packBytes?: number }): void {
  imports.inc(outcome.kind === 'retry' && outcome.resync ? { outcome: outcome.kind, resync: outcome.resync } : { outcome: outcome.kind });
  if (outcome.kind === 'imported') {
    importedBlocks.inc(outcome.newBlocks ?? 0);
    importedPackBytes.inc(outcome.packBytes ?? 0);
  }
}

/** Counts nodes a walk stepped. */
export function recordWalkNodes(walkType: string, nodeType: string, count = 1): void {
  if (count > 0) walkNodes.inc({ walk_type: walkType, node_type: nodeType }, count);
}

/** Counts findings a walk recorded. */
export function recordWalkFindings(walkType: string, check: string, severity: string, count = 1): void {
  if (count > 0) walkFindings.inc({ walk_type: walkType, check, severity }, count);
}

/**
 * Counts what one page of a walk did: its nodes by type and its findings (`check:severity`
 * keys). Pass only what this attempt walked, not totals carried over from a heartbeat, or a
 * resumed page is counted twice.
 */
export function recordWalkTotals(walkType: string, totals: Pick<WalkTotals, 'types' | 'findings'>): void {
  for (const [nodeType, t] of Object.entries(totals.types)) if (t) recordWalkNodes(walkType, nodeType, t.walked);
  for (const [key, n] of Object.entries(totals.findings)) {
    const at = key.lastIndexOf(':');
    recordWalkFindings(walkType, at < 0 ? key : key.slice(0, at), at < 0 ? 'error' : key.slice(at + 1), n);
  }
}
