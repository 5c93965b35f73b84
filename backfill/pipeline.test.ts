/**
 * The bulk path's pages on one worker: two pages run at once share the pipeline's lanes, the
 * older first, so the newer page's repos are fetched only as the older runs out of DIDs; each
 * page still answers with its own repos' outcomes, each repo stored once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { refcountProblems } from '../test/helpers.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { serveRepos, smallRepos, type SmallRepo } from '../atproto/testing/static-pds.ts';
import { enableTimeline, timelineLength, timelineSince } from '../ingest/timeline.ts';
import { BackfillSettings } from './settings.ts';
import { backfillPipeline } from './pipeline.ts';

let pool: pg.Pool;
let dir: string;
let server: Server;
let url: string;
let repos: SmallRepo[];

beforeAll(async () => {
  pool = await connectPool(await freshDatabase('pipeline'));
  await migrate(pool);
  dir = mkdtempSync(join(tmpdir(), 'repowalk-pipeline-'));
  repos = await smallRepos(40, 3, () => {}, { keyPerRepo: false });
  ({ url, server } = await serveRepos(repos, { getRepoDelayMs: 5 }));
}, 120_000);

afterAll(async () => {
  server?.close();
  await pool?.end();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('backfillMany pages on one pipeline', () => {
  it('two pages at once share the lanes, the older page first, each with its own outcomes', async () => {
    const pipeline = backfillPipeline(
      { pool, blobs: new LocalBlobStore(dir) },
      { plcUrl: `${url}/plc`, allowPrivateAddresses: true, identityTtlSeconds: 60, pdsConcurrency: 16, pdsMinIntervalMs: 0, fetchTimeoutSeconds: 30, fetchDeadlineSeconds: 60, fetchMinBytesPerSecond: 1, verifyHandles: false },
    );
    const settings = BackfillSettings.parse({});
    enableTimeline();
    const from = timelineLength();
    const signal = new AbortController().signal;
    const older = repos.slice(0, 20).map((r) => r.did);
    const newer = repos.slice(20).map((r) => r.did);
    // Which page each arriving chunk of a CAR was for, in order.
    const arrived: string[] = [];
    const [a, b] = await Promise.all([
      pipeline.backfillMany(older, settings, 4, { signal, onBytes: () => void arrived.push('a') }),
      pipeline.backfillMany(newer, settings, 4, { signal, onBytes: () => void arrived.push('b') }),
    ]);
    expect(a.map((o) => [o.did, o.kind])).toEqual(older.map((d) => [d, 'imported']));
    expect(b.map((o) => [o.did, o.kind])).toEqual(newer.map((d) => [d, 'imported']));

    // The newer page's first repo was fetched only once the older one had no DIDs left to start:
    // at least 16 of its 20 repos (4 lanes) had arrived before it. Taking turns, it would be 4.
    expect(arrived.indexOf('b')).toBeGreaterThanOrEqual(16);
    const tl = timelineSince(from);
    // Never more lanes busy than one page's concurrency, though each page has four of its own.
    expect(Math.max(...tl.filter((m) => m.kind === 'lanes').map((m) => m.n))).toBe(4);
    // The older page runs out of DIDs first; the newer one's lanes finish after.
    const [first, second] = tl.filter((m) => m.kind === 'page-lanes-done');
    expect(first!.page).toBeLessThan(second!.page!);
    // Each repo stored once.
    expect((await pool.query('SELECT count(*)::int AS n FROM repos')).rows[0].n).toBe(40);
    expect((await pool.query('SELECT count(*)::int AS n FROM records')).rows[0].n).toBe(40 * 3);
    expect(await refcountProblems(pool)).toEqual([]);
  });
});
