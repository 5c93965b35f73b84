/**
 * Proves the test harness: the reference PDS + PLC on loopback (stack/pds.ts, filled through test/pds.ts) and the
 * fault-injecting proxy (test/fault-server.ts). Needs no Temporal or Postgres.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fromUint8Array } from '@atcute/car';
import { decode } from '@atcute/cbor';
import { fromString as cidFromString, toString as cidToString } from '@atcute/cid';
import {
  XrpcError,
  applyWrites,
  createAccount,
  createRecord,
  deactivateAccount,
  deleteAccountAdmin,
  deleteRecord,
  getBlob,
  getRepoCar,
  getRepoStatus,
  listAllRecords,
  listAllRepos,
  listRecords,
  listReposPage,
  pngBytes,
  putRecord,
  resolvePlc,
  seedSampleAccounts,
  startPds,
  takedownAccount,
  uploadBlob,
} from './pds.ts';
import type { PdsServer, TestAccount } from './pds.ts';
import { startFaultServer } from './fault-server.ts';
import type { FaultServer } from './fault-server.ts';

let pds: PdsServer;
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'repowalk-pds-'));
  const t0 = performance.now();
  pds = await startPds({ dataDir });
  console.log(`startPds (including provisioning): ${Math.round(performance.now() - t0)} ms`);
}, 900_000);

afterAll(async () => {
  await pds?.stop();
  if (dataDir && process.env.REPOWALK_KEEP_TEST_STATE !== '1') await rm(dataDir, { recursive: true, force: true });
}, 60_000);

function now(): string {
  return new Date().toISOString();
}

interface Commit {
  did: string;
  version: number;
  rev: string;
  data: unknown;
  sig: unknown;
}

function readCar(bytes: Uint8Array): { root: string; commit: Commit; blocks: number; badBlocks: number } {
  const car = fromUint8Array(bytes);
  const root = car.roots[0]!.$link;
  let commit: Commit | undefined;
  let blocks = 0;
  let badBlocks = 0;
  for (const entry of car) {
    blocks++;
    const digest = createHash('sha256').update(entry.bytes).digest();
    if (!digest.equals(Buffer.from(entry.cid.digest.contents))) badBlocks++;
    if (cidToString(entry.cid) === root) commit = decode(entry.bytes) as Commit;
  }
  if (!commit) throw new Error('commit block missing');
  return { root, commit, blocks, badBlocks };
}

async function xrpcErrorOf(p: Promise<unknown>): Promise<XrpcError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof XrpcError) return err;
    throw err;
  }
  throw new Error('expected an XRPC error');
}

describe('reference PDS', () => {
  let alice: TestAccount;

  it('creates an account whose DID resolves in the PLC to this PDS', async () => {
    alice = await createAccount(pds, 'alice');
    expect(alice.did).toMatch(/^did:plc:[a-z2-7]{24}$/);
    expect(alice.handle).toBe('alice.test');
    const doc = await resolvePlc(pds.plcUrl, alice.did);
    expect(doc.alsoKnownAs).toEqual(['at://alice.test']);
    expect(JSON.stringify(doc.service)).toContain(pds.publicUrl);
  });

  it('writes records and serves a CAR whose commit names the DID', async () => {
    const a = await createRecord(alice, 'app.bsky.feed.post', { text: 'first', createdAt: now() });
    const b = await createRecord(alice, 'app.bsky.feed.post', { text: 'second', createdAt: now() });
    await putRecord(alice, 'app.bsky.feed.post', b.rkey, { text: 'second, edited', createdAt: now() });
    await deleteRecord(alice, 'app.bsky.feed.post', a.rkey);
    await putRecord(alice, 'app.bsky.actor.profile', 'self', { displayName: 'Alice' });
    await applyWrites(alice, [
      { action: 'create', collection: 'app.bsky.graph.follow', value: { subject: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', createdAt: now() } },
      { action: 'create', collection: 'app.bsky.feed.post', rkey: '3kaaaaaaaaaa2', value: { text: 'third', createdAt: now() } },
    ]);

    const posts = await listRecords(pds, alice.did, 'app.bsky.feed.post');
    expect(posts.map((r) => (r.value as { text: string }).text).sort()).toEqual(['second, edited', 'third']);
    const all = await listAllRecords(pds, alice.did);
    expect(all.map((r) => r.collection).sort()).toEqual(['app.bsky.actor.profile', 'app.bsky.feed.post', 'app.bsky.feed.post', 'app.bsky.graph.follow']);

    const car = readCar(await getRepoCar(pds, alice.did));
    expect(car.commit.did).toBe(alice.did);
    expect(car.commit.version).toBe(3);
    expect(car.badBlocks).toBe(0);
    const status = await getRepoStatus(pds, alice.did);
    expect(status).toMatchObject({ did: alice.did, active: true, rev: car.commit.rev });
    const repos = await listReposPage(pds);
    expect(repos.repos.find((r) => r.did === alice.did)?.head).toBe(car.root);
    // The gzip path gives the same bytes.
    expect(Buffer.from(await getRepoCar(pds, alice.did, { gzip: true })).equals(Buffer.from(await getRepoCar(pds, alice.did)))).toBe(true);
  });

  it('stores image blobs and serves them back by CID', async () => {
    const png = pngBytes(12, 10, 7);
    const blob = await uploadBlob(alice, png, 'image/png');
    expect(blob.mimeType).toBe('image/png');
    await createRecord(alice, 'app.bsky.feed.post', {
      text: 'with an image',
      createdAt: now(),
      embed: { $type: 'app.bsky.embed.images', images: [{ image: blob, alt: 'x', aspectRatio: { width: 12, height: 10 } }] },
    });
    const back = await getBlob(pds, alice.did, blob.ref.$link);
    expect(Buffer.from(back).equals(Buffer.from(png))).toBe(true);
    const digest = createHash('sha256').update(back).digest();
    expect(digest.equals(Buffer.from(cidFromString(blob.ref.$link).digest.contents))).toBe(true);
  });

  it('answers RepoDeactivated, RepoTakendown and RepoNotFound', async () => {
    const [d, t, x] = await Promise.all([createAccount(pds, 'deact'), createAccount(pds, 'takendown'), createAccount(pds, 'deleted')]);
    for (const a of [d, t, x]) await createRecord(a, 'app.bsky.feed.post', { text: 'hi', createdAt: now() });

    await deactivateAccount(d);
    const e1 = await xrpcErrorOf(getRepoCar(pds, d.did));
    expect([e1.status, e1.error]).toEqual([400, 'RepoDeactivated']);
    expect(await getRepoStatus(pds, d.did)).toMatchObject({ active: false, status: 'deactivated' });

    await takedownAccount(pds, t.did);
    const e2 = await xrpcErrorOf(getRepoCar(pds, t.did));
    expect([e2.status, e2.error]).toEqual([400, 'RepoTakendown']);
    expect(await getRepoStatus(pds, t.did)).toMatchObject({ active: false, status: 'takendown' });

    await deleteAccountAdmin(pds, x.did);
    const e3 = await xrpcErrorOf(getRepoCar(pds, x.did));
    expect([e3.status, e3.error]).toEqual([400, 'RepoNotFound']);
    const e4 = await xrpcErrorOf(getRepoStatus(pds, x.did));
    expect(e4.error).toBe('RepoNotFound');
    // The DID still resolves.
    expect((await resolvePlc(pds.plcUrl, x.did)).id).toBe(x.did);

    // listRepos reports the states too.
    const { repos } = await listAllRepos(pds);
    expect(repos.find((r) => r.did === d.did)).toMatchObject({ active: false, status: 'deactivated' });
    expect(repos.find((r) => r.did === t.did)).toMatchObject({ active: false, status: 'takendown' });
    expect(repos.find((r) => r.did === x.did)).toBeUndefined();
  });

  it('pages listRepos by cursor', async () => {
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await createAccount(pds, `pager${i}`)).did);
    const { repos, pages } = await listAllRepos(pds, { pageSize: 2 });
    expect(pages).toBeGreaterThanOrEqual(4);
    const dids = repos.map((r) => r.did);
    expect(new Set(dids).size).toBe(dids.length);
    for (const did of made) expect(dids).toContain(did);
    // The last page is empty or has no cursor.
    const first = await listReposPage(pds, { limit: 2 });
    expect(first.repos).toHaveLength(2);
    expect(first.cursor).toBeTruthy();
  });

  it('seeds sample accounts, one with 5,000 records', async () => {
    const s = await seedSampleAccounts(pds, { prefix: 's-', bigAccountRecords: 5000 });
    console.log(
      `seedSampleAccounts: total ${Math.round(s.timings.totalMs)} ms; big account ${s.timings.bigAccountRecords} records in ${Math.round(s.timings.bigAccountMs)} ms ` +
        `(${Math.round(s.timings.bigAccountRecords / (s.timings.bigAccountMs / 1000))} records/s)`,
    );
    for (const a of s.all) {
      const records = await listAllRecords(pds, a.did);
      expect(records.length).toBe(s.recordCounts[a.did]);
    }
    expect(s.recordCounts[s.big!.did]).toBe(5001);
    const collections = new Set((await listAllRecords(pds, s.alice.did)).map((r) => r.collection));
    expect([...collections].sort()).toEqual([
      'app.bsky.actor.profile',
      'app.bsky.feed.like',
      'app.bsky.feed.post',
      'app.bsky.feed.repost',
      'app.bsky.graph.follow',
    ]);
    expect(s.blobs.length).toBe(9);
    for (const b of s.blobs) expect((await getBlob(pds, b.did, b.cid)).length).toBe(b.size);
    const t0 = performance.now();
    const car = readCar(await getRepoCar(pds, s.big!.did));
    console.log(`getRepo of the big account: ${car.blocks} blocks in ${Math.round(performance.now() - t0)} ms`);
    expect(car.commit.did).toBe(s.big!.did);
    expect(car.badBlocks).toBe(0);
  }, 300_000);
});

describe('fault server', () => {
  let faults: FaultServer;
  let bob: TestAccount;
  let carol: TestAccount;
  let carBytes: Uint8Array;

  beforeAll(async () => {
    faults = await startFaultServer({ upstream: pds.pdsUrl });
    bob = await createAccount(pds, 'bob');
    carol = await createAccount(pds, 'carol');
    const writes = Array.from({ length: 50 }, (_, i) => ({
      action: 'create' as const,
      collection: 'app.bsky.feed.post',
      value: { text: `bob ${i}`, createdAt: now() },
    }));
    await applyWrites(bob, writes);
    await createRecord(carol, 'app.bsky.feed.post', { text: 'carol', createdAt: now() });
    carBytes = await getRepoCar(pds, bob.did);
  });

  afterAll(async () => {
    await faults?.stop();
  });

  it('passes requests through unchanged', async () => {
    faults.clearRules();
    expect(Buffer.from(await getRepoCar(faults.url, bob.did)).equals(Buffer.from(carBytes))).toBe(true);
    expect((await listRecords(faults.url, bob.did, 'app.bsky.feed.post')).length).toBe(50);
    // POSTs too (a write through the proxy).
    await createRecord({ ...carol, pdsUrl: faults.url }, 'app.bsky.feed.post', { text: 'via proxy', createdAt: now() });
    expect((await listRecords(pds, carol.did, 'app.bsky.feed.post')).length).toBe(2);
  });

  it('answers 429 with Retry-After and RateLimit-Reset, for one DID, a given number of times', async () => {
    faults.clearRules();
    const id = faults.setRule({ path: 'com.atproto.sync.getRepo', did: bob.did, times: 1, action: { type: 'rateLimit', retryAfter: 3 } });
    const before = Math.floor(Date.now() / 1000);
    const e = await xrpcErrorOf(getRepoCar(faults.url, bob.did));
    expect(e.status).toBe(429);
    expect(e.error).toBe('RateLimitExceeded');
    expect(e.headers.get('retry-after')).toBe('3');
    expect(Number(e.headers.get('ratelimit-reset'))).toBeGreaterThanOrEqual(before + 3);
    expect(e.headers.get('ratelimit-remaining')).toBe('0');
    // Other DIDs are untouched, and the rule retires after one hit.
    expect(readCar(await getRepoCar(faults.url, carol.did)).commit.did).toBe(carol.did);
    expect(Buffer.from(await getRepoCar(faults.url, bob.did)).equals(Buffer.from(carBytes))).toBe(true);
    expect(faults.hits(id)).toBe(1);
  });

  it('resets the connection in the middle of the CAR body', async () => {
    faults.clearRules();
    faults.setRule({ path: 'com.atproto.sync.getRepo', did: bob.did, action: { type: 'reset', afterBytes: 1000 } });
    const res = await fetch(`${faults.url}/xrpc/com.atproto.sync.getRepo?did=${bob.did}`);
    expect(res.status).toBe(200);
    expect(Number(res.headers.get('content-length') ?? carBytes.length)).toBe(carBytes.length);
    const err = await res.arrayBuffer().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    // Read it as a stream: exactly 1000 bytes arrive before the error.
    const res2 = await fetch(`${faults.url}/xrpc/com.atproto.sync.getRepo?did=${bob.did}`);
    let got = 0;
    let streamErr: unknown;
    try {
      for await (const chunk of res2.body!) got += (chunk as Uint8Array).length;
    } catch (e) {
      streamErr = e;
    }
    expect(streamErr).toBeInstanceOf(Error);
    expect(got).toBe(1000);
  });

  it('truncates the body and ends the response cleanly', async () => {
    faults.clearRules();
    faults.setRule({ path: 'com.atproto.sync.getRepo', did: bob.did, action: { type: 'truncate', afterBytes: 700 } });
    const bytes = await getRepoCar(faults.url, bob.did);
    expect(bytes.length).toBe(700);
    expect(Buffer.from(bytes).equals(Buffer.from(carBytes.subarray(0, 700)))).toBe(true);
    expect(() => readCar(bytes)).toThrow();
  });

  it('flips a byte of the CAR at an offset, so one block no longer matches its CID', async () => {
    faults.clearRules();
    // The middle of the last block's bytes.
    const car = fromUint8Array(carBytes);
    let last: { bytesStart: number; bytesEnd: number } | undefined;
    for (const e of car) last = e;
    const offset = Math.floor((last!.bytesStart + last!.bytesEnd) / 2);
    faults.setRule({ path: 'com.atproto.sync.getRepo', did: bob.did, action: { type: 'flipByte', offset, xor: 0x40 } });
    const bytes = await getRepoCar(faults.url, bob.did);
    expect(bytes.length).toBe(carBytes.length);
    const diff = [...bytes.keys()].filter((i) => bytes[i] !== carBytes[i]);
    expect(diff).toEqual([offset]);
    expect(bytes[offset]).toBe(carBytes[offset]! ^ 0x40);
    expect(readCar(bytes).badBlocks).toBe(1);
  });

  it('answers RepoSuspended, canned answers and delays', async () => {
    faults.clearRules();
    faults.setRule({ path: 'com.atproto.sync.getRepo', did: bob.did, action: { type: 'error', error: 'RepoSuspended', message: 'Repo has been suspended' } });
    faults.setRule({ path: 'com.atproto.sync.getRepoStatus', did: bob.did, action: { type: 'respond', status: 200, body: { did: bob.did, active: false, status: 'suspended' } } });
    faults.setRule({ path: 'com.atproto.sync.getRepo', did: carol.did, delayMs: 400, action: { type: 'delay', ms: 100 } });
    const e = await xrpcErrorOf(getRepoCar(faults.url, bob.did));
    expect([e.status, e.error, e.message]).toEqual([400, 'RepoSuspended', 'com.atproto.sync.getRepo: 400 RepoSuspended: Repo has been suspended']);
    expect(await getRepoStatus(faults.url, bob.did)).toEqual({ did: bob.did, active: false, status: 'suspended' });
    const t0 = performance.now();
    expect(readCar(await getRepoCar(faults.url, carol.did)).commit.did).toBe(carol.did);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(490);
  });

  it('serves a doctored DID document from in front of the PLC', async () => {
    const plcFaults = await startFaultServer({ upstream: pds.plcUrl });
    try {
      plcFaults.setRule({
        path: `/${bob.did}`,
        action: {
          type: 'mapJson',
          map: (doc) => {
            const d = doc as { service: Array<{ serviceEndpoint: string }> };
            d.service[0]!.serviceEndpoint = faults.url;
            return d;
          },
        },
      });
      const doc = (await resolvePlc(plcFaults.url, bob.did)) as { service: Array<{ serviceEndpoint: string }> };
      expect(doc.service[0]!.serviceEndpoint).toBe(faults.url);
      const plain = (await resolvePlc(plcFaults.url, carol.did)) as { service: Array<{ serviceEndpoint: string }> };
      expect(plain.service[0]!.serviceEndpoint).toBe(pds.publicUrl);
    } finally {
      await plcFaults.stop();
    }
  });

  it('hangs and throttles', async () => {
    faults.clearRules();
    faults.setRule({ path: /getRepo$/, did: bob.did, action: { type: 'hang' } });
    faults.setRule({ path: /getRepo$/, did: carol.did, action: { type: 'throttle', bytesPerSecond: 2000 } });
    const err = await fetch(`${faults.url}/xrpc/com.atproto.sync.getRepo?did=${bob.did}`, { signal: AbortSignal.timeout(300) }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect((err as Error).name).toBe('TimeoutError');
    const t0 = performance.now();
    const carolCar = await getRepoCar(faults.url, carol.did);
    expect(performance.now() - t0).toBeGreaterThanOrEqual((carolCar.length / 2000) * 1000 * 0.8);
    expect(faults.log.some((l) => l.action === 'hang' && l.status === undefined)).toBe(true);
  });
});
