/**
 * The scrub walk on a mirror stored in a real multiplexed blobstore: two buckets of the stack's
 * S3 server, with the heal queue in PostgreSQL. Copies are deleted or corrupted behind the
 * store's back, in one component, and scrub must name exactly that key and that component;
 * `repair` must restore it, and the next scrub must be clean.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshBucket, freshDatabase, testStack } from '../../test/stack.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { PgHealQueue } from '../../storage/db/heal-queue.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import { S3BlobStore } from '../../storage/blobstore/s3.ts';
import { MultiplexBlobStore } from '../../storage/blobstore/multiplex.ts';
import type { BlobStore } from '../../storage/blobstore/types.ts';
import { blobKey } from '../../storage/keys.ts';
import { cidOf } from '../../atproto/testing/make-repo.ts';
import { MemoryFindings, type Finding } from '../findings.ts';
import type { Node } from '../nodes.ts';
import { runWalk, type WalkSpec } from '../run.ts';
import { buildMirror, testDids } from '../../test/mirror.ts';
import type { ScrubOptions } from './scrub.ts';

let pool: pg.Pool;
let a: S3BlobStore;
let b: S3BlobStore;
let store: MultiplexBlobStore;
let heal: PgHealQueue;
let packKeys: string[];
const dids = testDids('scrub', 3);
const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
const tempDirs: string[] = [];

function s3(bucket: string, endpoint = testStack().s3.endpoint): S3BlobStore {
  const s = testStack().s3;
  return new S3BlobStore({
    bucket,
    config: { endpoint, region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    retries: { attempts: 2, baseDelayMs: 1, maxDelayMs: 5 },
  });
}

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_scrub'));
  await migrate(pool);
  heal = new PgHealQueue(pool);
  a = s3(await freshBucket('scrub-a'));
  b = s3(await freshBucket('scrub-b'));
  store = new MultiplexBlobStore({ components: [a, b], writeQuorum: 2, healQueue: heal });
  await buildMirror({ pool, blobs: store }, dids.map((did, i) => ({ did, records: 40 + 10 * i })));
  // Two of the image blobs the generated posts reference (every 20th record is a post with an
  // image; all three repos hold posts 0 and 20), stored as blob mirroring would.
  for (const i of [0, 20]) {
    const bytes = new TextEncoder().encode(`image ${i}`);
    const cid = cidOf(0x55, bytes);
    await store.put(blobKey(cid), bytes);
    await pool.query(`INSERT INTO blobs (cid, did, size, mime, status, key) VALUES ($1, $2, $3, 'image/jpeg', 'present', $4)`, [cid, dids[0], bytes.length, blobKey(cid)]);
  }
  packKeys = (await pool.query<{ key: string }>('SELECT key FROM packs ORDER BY id')).rows.map((r) => r.key);
}, 120_000);

afterAll(async () => {
  await pool?.end();
  for (const d of tempDirs) await rm(d, { recursive: true, force: true });
});

async function scrub(opts: ScrubOptions = {}, over: BlobStore = store, spec: Partial<WalkSpec> = {}) {
  const findings = new MemoryFindings();
  const { totals } = await runWalk({ pool, store: over, healQueue: heal }, { type: 'scrub', scrub: { graceSeconds: 0, ...opts }, ...spec }, roots, { findings });
  return { findings: findings.findings, totals };
}

/** Findings as `check key [components]`, one per distinct finding (a pack two repos share is checked by each). */
const summary = (fs: Finding[]) => [...new Set(fs.map((f) => `${f.check} ${f.nodeType}:${f.key} [${(f.components ?? []).join(',')}]`))].sort();

describe('scrub', () => {
  it('finds every component holding every reachable pack and blob', async () => {
    const { findings, totals } = await scrub();
    expect(findings).toEqual([]);
    expect(packKeys).toHaveLength(3);
    expect(totals.types.Pack?.checked).toBeGreaterThanOrEqual(3);
    expect(totals.types.Blob?.walked).toBeGreaterThan(2); // referenced, mostly not mirrored
    // Every reachable pack, and both stored blobs from each of the three repos, on both components.
    expect(totals.counters['scrub.keys']).toBe(totals.types.Pack!.checked + 6);
    expect(totals.counters['scrub.copies']).toBe(2 * totals.counters['scrub.keys']!);
  });

  it('a pack deleted from one component: reports that key and component; repair restores it; then clean', async () => {
    const key = packKeys[1]!;
    await b.delete(key);
    await heal.record({ key, component: b.name, reason: 'missed-write' });

    const reported = await scrub();
    expect(summary(reported.findings)).toEqual([`scrub-missing Pack:${key} [${b.name}]`]);
    expect(reported.findings[0]!.detail).toBe(`missing on ${b.name} (1 of 2 components hold it)`);
    // The repo that imported it reaches it; so does a later repo that shares blocks with it.
    expect(reported.findings.map((f) => f.route[0]!.node)).toContain(`Repo:${dids[1]}`);
    expect(reported.findings[0]!.route.at(-1)!.edge).toMatch(/^(Commit|MstNode|Record)ToPack$/);
    expect(await b.has(key)).toBe(false); // report-only by default

    const repaired = await scrub({ repair: true });
    expect(summary(repaired.findings)).toEqual([`scrub-missing Pack:${key} [${b.name}]`]);
    expect(repaired.findings[0]!.detail).toContain(`repaired from ${a.name}`);
    expect(repaired.totals.counters['scrub.repaired']).toBeGreaterThanOrEqual(1);
    expect(await b.has(key)).toBe(true);
    expect(Buffer.from((await b.get(key))!).equals(Buffer.from((await a.get(key))!))).toBe(true);
    expect((await heal.listOpen()).filter((e) => e.key === key)).toEqual([]);

    expect((await scrub()).findings).toEqual([]);
  });

  it('bytes flipped in one copy: sizes agree, so only byte verification names the component; repair fixes it', async () => {
    const key = packKeys[2]!;
    const good = (await a.get(key))!;
    const bad = Uint8Array.from(good);
    bad[bad.length >> 1]! ^= 0x01;
    await a.put(key, bad);

    expect((await scrub()).findings).toEqual([]);
    const verified = await scrub({ verifyBytes: true });
    expect(summary(verified.findings)).toEqual([`scrub-corrupt Pack:${key} [${a.name}]`]);
    expect(verified.findings[0]!.detail).toMatch(new RegExp(`^${a.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: sha-256 is [0-9a-f]{64}$`));
    expect(verified.totals.counters['scrub.bytesVerified']).toBeGreaterThan(0);

    // Validate reads through the multiplexed store, which serves the copy that verifies.
    const v = new MemoryFindings();
    await runWalk({ pool, store }, { type: 'validate' }, roots, { findings: v });
    expect(v.findings.map((f) => `${f.check} ${f.detail}`)).toEqual([]);

    await scrub({ verifyBytes: true, repair: true });
    expect(Buffer.from((await a.get(key))!).equals(Buffer.from(good))).toBe(true);
    expect((await scrub({ verifyBytes: true })).findings).toEqual([]);
  });

  it('a blob missing from one component is found like a pack', async () => {
    const key = blobKey(cidOf(0x55, new TextEncoder().encode('image 20')));
    await a.delete(key);
    const { findings } = await scrub({ repair: true });
    expect(summary(findings)).toEqual([`scrub-missing Blob:${key.split('/')[2]} [${a.name}]`]);
    expect(await a.has(key)).toBe(true);
  });

  it('skips keys younger than the grace period', async () => {
    const { findings, totals } = await scrub({ graceSeconds: 3600 });
    expect(findings).toEqual([]);
    expect(totals.counters['scrub.keys']).toBeUndefined();
    expect(totals.counters['scrub.young']).toBeGreaterThanOrEqual(5);
  });

  it('samples keys: rate 2, offsets 0 and 1 check every key once', async () => {
    const all = new Set<string>();
    let n = 0;
    for (const offset of [0, 1]) {
      await b.delete(packKeys[0]!).then(() => b.delete(packKeys[1]!)).then(() => b.delete(packKeys[2]!));
      const { findings } = await scrub({}, store, { sampling: { rate: 2, offset } });
      for (const k of new Set(findings.map((f) => f.key))) {
        expect(all.has(k)).toBe(false);
        all.add(k);
        n++;
      }
      await scrub({ repair: true });
    }
    expect([...all].sort()).toEqual([...packKeys].sort());
    expect(n).toBe(3);
  });

  it('a component that cannot be reached is a warning, not a missing copy', async () => {
    const down = s3('nowhere', 'http://127.0.0.1:1');
    const three = new MultiplexBlobStore({ components: [a, b, down], writeQuorum: 1 });
    const { findings } = await scrub({}, three);
    expect(findings.length).toBeGreaterThan(0);
    for (const f of findings) expect(f).toMatchObject({ check: 'scrub-unreachable', severity: 'warn', components: [down.name] });
  });

  it('on a store that is not multiplexed, a missing pack is named, with nothing to repair from', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'repowalk-scrub-local-'));
    tempDirs.push(dir);
    const local = new LocalBlobStore(dir);
    for (const key of packKeys) await local.put(key, (await store.get(key))!);
    await unlink(join(dir, ...packKeys[0]!.split('/')));
    // The blocks in that pack cannot be read, so the walk only gets on with errors as data; a
    // block whose pack is missing still leads to the pack.
    const { findings } = await scrub({ repair: true }, local, { filter: { excludeNodes: ['Blob'] }, errorAsData: true });
    expect(summary(findings.filter((f) => f.check.startsWith('scrub-')))).toEqual([
      `scrub-missing Pack:${packKeys[0]} [${local.name}]`,
      `scrub-unrepairable Pack:${packKeys[0]} [${local.name}]`,
    ]);
    const failures = findings.filter((f) => !f.check.startsWith('scrub-'));
    expect(failures.length).toBeGreaterThan(0);
    for (const f of failures) expect(f).toMatchObject({ check: 'pack-missing', detail: expect.stringContaining(packKeys[0]!) });
  });
});
