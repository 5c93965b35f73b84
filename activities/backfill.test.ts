/**
 * The bulk activity's heartbeats in a mock activity context: a page that makes no progress for a
 * while (waiting for the worker's lanes while an older page has them) still heartbeats within its
 * heartbeat timeout, and its last heartbeat is its final progress.
 */
import { describe, expect, it, vi } from 'vitest';
import { MockActivityEnvironment } from '@temporalio/testing';
import { BackfillSettings, type RepoOutcome } from '../backfill/settings.ts';
import type { ManyHooks } from '../backfill/pipeline.ts';

// A pipeline whose page waits `quietMs` with no progress, then settles each DID as skipped.
const quietMs = 1_300;
vi.mock('../backfill/pipeline.ts', () => ({
  backfillPipeline: () => ({
    async backfillMany(dids: string[], _settings: unknown, _concurrency: number, hooks: ManyHooks): Promise<RepoOutcome[]> {
      await new Promise((r) => setTimeout(r, quietMs));
      return dids.map((did) => {
        const outcome: RepoOutcome = { did, kind: 'skipped', rev: '3l4bmq3xq2k2a' };
        hooks.onOutcome?.(outcome);
        return outcome;
      });
    },
  }),
}));
const { backfillActivities } = await import('./backfill.ts');

describe('backfillMany heartbeats', () => {
  it('heartbeats at least every half heartbeat timeout while a page makes no progress', async () => {
    const acts = backfillActivities({ config: { network: { pdsPoliteness: 'local' } }, stores: {} } as never);
    const env = new MockActivityEnvironment({ heartbeatTimeoutMs: 500 });
    const beats: Array<{ at: number; details: unknown }> = [];
    const t0 = performance.now();
    env.on('heartbeat', (details: unknown) => beats.push({ at: performance.now() - t0, details }));
    const out = (await env.run(acts.backfillMany, ['did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'], BackfillSettings.parse({}), 2)) as RepoOutcome[];
    expect(out.map((o) => o.kind)).toEqual(['skipped', 'skipped']);
    // Quiet for 1.3 s with a 0.5 s timeout: beats at about 0.25 s intervals, none more than 0.5 s apart.
    const quiet = beats.filter((b) => b.at < quietMs);
    expect(quiet.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < quiet.length; i++) expect(quiet[i]!.at - quiet[i - 1]!.at).toBeLessThan(500);
    expect(beats.at(-1)!.details).toEqual({ done: 2, of: 2, bytes: 0 });
  });
});
