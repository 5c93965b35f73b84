/**
 * Live sync metrics, in the process registry beside the others: frames by type, outcomes,
 * resyncs triggered, errors kept, and the lag behind the upstream's clock. A subscription reports
 * running totals (sync/progress.ts); the counters take their increase since the last report.
 */
import { Counter, Gauge } from 'prom-client';
import { processRegistry } from './counters.ts';
import type { SyncProgress } from '../sync/progress.ts';

const frames = new Counter({ name: 'repowalk_sync_frames_total', help: 'Firehose frames read, by upstream host and frame type.', labelNames: ['host', 'type'] as const, registers: [processRegistry] });
const outcomes = new Counter({ name: 'repowalk_sync_outcomes_total', help: 'Changes applied from the firehose, by host and outcome (imported, skipped, gap, dropped, account, identity).', labelNames: ['host', 'outcome'] as const, registers: [processRegistry] });
const resyncs = new Counter({ name: 'repowalk_sync_resyncs_total', help: 'Repos sent to resync by live sync.', labelNames: ['host'] as const, registers: [processRegistry] });
const errors = new Counter({ name: 'repowalk_sync_frame_errors_total', help: 'Frames kept as errors (sync_frame_errors).', labelNames: ['host'] as const, registers: [processRegistry] });
const lag = new Gauge({ name: 'repowalk_sync_lag_seconds', help: 'How far the last applied frame lies behind our clock.', labelNames: ['host'] as const, registers: [processRegistry] });
const cursor = new Gauge({ name: 'repowalk_sync_cursor', help: 'Last sequence number applied.', labelNames: ['host'] as const, registers: [processRegistry] });

const seen = new Map<string, { frames: Record<string, number>; outcomes: Record<string, number>; resyncs: number; errors: number }>();

export function recordSyncProgress(p: SyncProgress): void {
  const host = new URL(p.host).host;
  let before = seen.get(host);
  // A new run starts its totals from zero.
  const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
  if (!before || total(p.frames) < total(before.frames)) before = { frames: {}, outcomes: {}, resyncs: 0, errors: 0 };
  for (const [type, n] of Object.entries(p.frames)) frames.inc({ host, type }, n - (before.frames[type] ?? 0));
  for (const [outcome, n] of Object.entries(p.outcomes)) outcomes.inc({ host, outcome }, n - (before.outcomes[outcome] ?? 0));
  resyncs.inc({ host }, p.resyncs - before.resyncs);
  errors.inc({ host }, p.errors - before.errors);
  if (p.lagMs !== undefined) lag.set({ host }, p.lagMs / 1000);
  if (p.cursor !== undefined) cursor.set({ host }, p.cursor);
  seen.set(host, { frames: { ...p.frames }, outcomes: { ...p.outcomes }, resyncs: p.resyncs, errors: p.errors });
}
