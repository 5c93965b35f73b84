/**
 * The page activity in a mock activity context: a page walked whole, the same page resumed from
 * a heartbeat (the repos done are skipped and their totals carried, so the result is the same),
 * its heartbeats, bad input, a data fault that fails the page for good, and cancellation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { runWalk } from '../graph/run.ts';
import { WalkInput, toWalkSpec } from '../graph/walk-input.ts';
import { walkActivities, type WalkPageInput, type WalkPageResult } from './walk.ts';

let pool: pg.Pool;
let dir: string;
let acts: ReturnType<typeof walkActivities>;
const dids = testDids('walkact', 3);
const walkPage = (env: MockActivityEnvironment, input: WalkPageInput) => env.run(acts.walkPage, input) as Promise<WalkPageResult>;
const page = (extra: Partial<WalkPageInput> = {}): WalkPageInput => ({
  walkId: 'act-test',
  input: { type: 'validate' },
  page: { kind: 'roots', roots: dids },
  ...extra,
});

beforeAll(async () => {
  pool = openPool(await freshDatabase('walk_act'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-walkact-'));
  const blobs = new LocalBlobStore(dir);
  await buildMirror({ pool, blobs }, dids.map((did, i) => ({ did, records: 40 + 10 * i })));
  acts = walkActivities({ stores: { pool, blobs, healQueue: new PgHealQueue(pool), close: async () => {} } });
});

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('walkPage', () => {
  it('walks a page, heartbeating after each repo', async () => {
    const env = new MockActivityEnvironment();
    const beats: { done: number[] }[] = [];
    env.on('heartbeat', (d: { done: number[] }) => beats.push(d));
    const r = await walkPage(env, page());
    expect(r.roots).toBe(3);
    expect(r.resumedRoots).toBe(0);
    expect(r.totals.roots).toBe(3);
    expect(beats[0]!.done).toEqual([]);
    expect(beats.at(-1)!.done.sort()).toEqual([0, 1, 2]);
  });

  it('resumes from heartbeat details: the repos done are skipped, the totals are the same', async () => {
    const whole = await walkPage(new MockActivityEnvironment(), page());
    const spec = toWalkSpec(WalkInput.parse({ type: 'validate' }));
    const first = await runWalk({ pool, store: new LocalBlobStore(dir) }, spec, [{ type: 'Repo', did: dids[1]! }]);
    const env = new MockActivityEnvironment({ heartbeatDetails: { roots: dids, cursor: undefined, done: [1], totals: first.totals } });
    // The page's roots come from the details: what the first attempt listed is what it resumes.
    const resumed = await walkPage(env, page({ page: { kind: 'roots', roots: ['did:plc:ignored'] } }));
    expect(resumed.resumedRoots).toBe(1);
    expect(resumed.totals).toEqual(whole.totals);
  });

  it('fails for good on bad input and on a fault in the data; errors as data walk on', async () => {
    const bad = await new MockActivityEnvironment().run(acts.walkPage, page({ input: { type: 'validate', sampleRate: 0 } })).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ApplicationFailure);
    expect((bad as ApplicationFailure).nonRetryable).toBe(true);

    // A head the index lost (repo-state finds it) ...
    const { rows } = await pool.query('DELETE FROM blocks WHERE cid = (SELECT head_cid FROM repos WHERE did = $1) RETURNING *', [dids[0]]);
    // ... and a data root it lost: the head is there, its MST root is not (a failed step).
    const data = (await pool.query('SELECT data_cid FROM repos WHERE did = $1', [dids[2]])).rows[0].data_cid;
    const lost = (await pool.query('DELETE FROM blocks WHERE cid = $1 RETURNING *', [data])).rows[0];
    try {
      const err = await new MockActivityEnvironment().run(acts.walkPage, page()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).type).toBe('WalkStepError');
      expect((err as ApplicationFailure).nonRetryable).toBe(true);
      expect((err as ApplicationFailure).message).toMatch(/MstNode \S+: block \S+ is not in the block index \(route: Repo:/);
      const onward = await walkPage(new MockActivityEnvironment(), page({ input: { type: 'validate', errorAsData: true } }));
      expect(onward.totals.findings['block-not-indexed:error']).toBe(1);
      expect(onward.totals.findings['repo-state:error']).toBe(1);
    } finally {
      for (const b of [rows[0], lost]) {
        await pool.query('INSERT INTO blocks (cid, pack_id, byte_offset, byte_length, refcount, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
          b.cid, b.pack_id, b.byte_offset, b.byte_length, b.refcount, b.created_at,
        ]);
      }
    }
  });

  it('stops when cancelled, as a cancellation', async () => {
    const env = new MockActivityEnvironment();
    env.on('heartbeat', () => env.cancel());
    const err = await env.run(acts.walkPage, page()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CancelledFailure);
  });
});
