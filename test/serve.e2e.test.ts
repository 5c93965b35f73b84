/**
 * Serving the mirror, proven with clients nobody here wrote: repos are backfilled from the REAL
 * reference PDS (test/pds.ts) into a real PostgreSQL and blobstore, then the serve server
 * answers `@atproto/repo` (`verifyRepoCar`, `verifyRecords`), `@atproto/api`'s AtpAgent and the
 * `@atproto/tap` client, and every answer is compared with what the PDS itself says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { verifyRepoCar, verifyRecords } from '@atproto/repo';
import { AtpAgent } from '@atproto/api';
import { MockActivityEnvironment } from '@temporalio/testing';
import { loadConfig } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import type { Config } from '../config/options.ts';
import { openStores, type Stores } from '../workers/stores.ts';
import { backfillActivities } from '../activities/backfill.ts';
import { BackfillSettings, type RepoOutcome } from '../backfill/settings.ts';
import { startServeServer, type ServeServer } from '../serve/server.ts';
import { freshDatabase } from './stack.ts';
import {
  createRecord,
  deactivateAccount,
  getBlob,
  getRepoCar,
  listAllRecords,
  seedSampleAccounts,
  startPds,
  xrpcQuery,
  type PdsServer,
  type SampleAccounts,
} from './pds.ts';

let pds: PdsServer;
let sample: SampleAccounts;
let dataDir: string;
let blobDir: string;
let pool: pg.Pool;
let stores: Stores;
let config: Config;
let serve: ServeServer;
const ADMIN_TOKEN = `t-${process.pid}-secret`;
const added: string[][] = [];

async function backfill(dids: string[]): Promise<RepoOutcome[]> {
  const acts = backfillActivities({ config, stores });
  return (await new MockActivityEnvironment().run(acts.backfillMany, dids, BackfillSettings.parse({ blobs: true }), 2)) as RepoOutcome[];
}

async function signingKeyOf(did: string): Promise<string> {
  const res = await fetch(`${pds.plcUrl}/${did}/data`);
  const data = (await res.json()) as { verificationMethods: { atproto: string } };
  return data.verificationMethods.atproto;
}

async function get(path: string, init: RequestInit = {}): Promise<{ status: number; body: any; bytes: Uint8Array }> {
  const res = await fetch(`${serve.url}${path}`, init);
  const bytes = new Uint8Array(await res.arrayBuffer());
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    body = undefined;
  }
  return { status: res.status, body, bytes };
}

const sortRecords = <T extends { collection: string; rkey: string }>(rs: T[]) =>
  [...rs].sort((a, b) => (a.collection + '/' + a.rkey < b.collection + '/' + b.rkey ? -1 : 1));

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'repowalk-serve-pds-'));
  blobDir = await mkdtemp(join(tmpdir(), 'repowalk-serve-blobs-'));
  const [p, databaseUrl] = await Promise.all([startPds({ dataDir }), freshDatabase('serve_e2e')]);
  pds = p;
  sample = await seedSampleAccounts(pds, { bigAccountRecords: 1500 });
  config = loadConfig({
    env: {
      REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: blobDir,
      REPOWALK_PLC_URL: pds.plcUrl,
      REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
      // The test PDS's handles (*.test) resolve nowhere; describeRepo is compared with the PDS's.
      REPOWALK_VERIFY_HANDLES: 'false',
      REPOWALK_LOG_LEVEL: 'error',
    },
  });
  stores = await openStores(config, resolveEndpoints(config));
  pool = stores.pool;
  const outcomes = await backfill(sample.all.map((a) => a.did));
  expect(outcomes.map((o) => o.kind)).toEqual(sample.all.map(() => 'imported'));
  serve = await startServeServer({
    pool,
    store: stores.blobs,
    adminToken: ADMIN_TOKEN,
    admin: {
      addRepos: async (dids) => void added.push(dids),
      resyncRepos: async () => {},
      removeRepos: async () => {},
    },
    stream: { stallTimeoutMs: 3000 },
    log: () => {},
  });
}, 300_000);

afterAll(async () => {
  await serve?.close();
  await stores?.close();
  await pds?.stop();
  for (const d of [dataDir, blobDir]) if (d) await rm(d, { recursive: true, force: true });
}, 60_000);

describe('XRPC against real clients', () => {
  it('verifyRepoCar accepts every CAR getRepo returns, and its records are the PDS\'s', async () => {
    for (const acct of sample.all) {
      const res = await fetch(`${serve.url}/xrpc/com.atproto.sync.getRepo?did=${acct.did}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/vnd.ipld.car');
      const car = new Uint8Array(await res.arrayBuffer());
      const verified = await verifyRepoCar(car, acct.did, await signingKeyOf(acct.did));
      const ours = sortRecords(verified.creates.map((c) => ({ collection: c.collection, rkey: c.rkey, cid: c.cid.toString() })));
      const theirs = sortRecords((await listAllRecords(pds, acct.did)).map((r) => ({ collection: r.collection, rkey: r.rkey, cid: r.cid })));
      expect(ours.length).toBe(sample.recordCounts[acct.did] ?? ours.length);
      expect(ours).toEqual(theirs);
      // The same commit the PDS serves.
      const pdsCar = await verifyRepoCar(await getRepoCar(pds, acct.did), acct.did);
      expect(verified.commit.rev).toBe(pdsCar.commit.rev);
    }
  });

  it('getRepo with since sends the commit, the tree and only the records written after it', async () => {
    const alice = sample.alice;
    const before = await get(`/xrpc/com.atproto.sync.getLatestCommit?did=${alice.did}`);
    const fresh = await createRecord(alice, 'app.bsky.feed.post', { $type: 'app.bsky.feed.post', text: 'after since', createdAt: new Date().toISOString() });
    expect((await backfill([alice.did]))[0]!.kind).toBe('imported');
    const full = await verifyRepoCar((await get(`/xrpc/com.atproto.sync.getRepo?did=${alice.did}`)).bytes, alice.did);
    const res = await get(`/xrpc/com.atproto.sync.getRepo?did=${alice.did}&since=${before.body.rev}`);
    expect(res.status).toBe(200);
    const { readCar } = await import('../atproto/car.ts');
    const car = readCar(res.bytes);
    const latest = await get(`/xrpc/com.atproto.sync.getLatestCommit?did=${alice.did}`);
    expect(car.root).toBe(latest.body.cid);
    expect(car.blocks.has(fresh.cid)).toBe(true);
    // Records older than `since` are left out.
    const old = full.creates.find((c) => c.cid.toString() !== fresh.cid)!;
    expect(car.blocks.has(old.cid.toString())).toBe(false);
  });

  it('AtpAgent reads listRecords, getRecord and describeRepo with the PDS\'s answers', async () => {
    const ours = new AtpAgent({ service: serve.url });
    const theirs = new AtpAgent({ service: pds.pdsUrl });
    for (const acct of [sample.alice, sample.big!]) {
      const desc = (await ours.com.atproto.repo.describeRepo({ repo: acct.did })).data;
      const pdsDesc = (await theirs.com.atproto.repo.describeRepo({ repo: acct.did })).data;
      expect({ ...desc, didDoc: undefined }).toEqual({ ...pdsDesc, didDoc: undefined });
      // The DID document is rebuilt from the repo row (handle, PDS, signing key), in the
      // Multikey form today's PLC directory serves; the test PLC still writes the legacy key form,
      // so the key is compared by what it names, the rest as is.
      const doc = desc.didDoc as any;
      const pdsDoc = pdsDesc.didDoc as any;
      expect(doc.id).toBe(pdsDoc.id);
      expect(doc.alsoKnownAs).toEqual(pdsDoc.alsoKnownAs);
      expect(doc.service).toEqual(pdsDoc.service);
      expect(`did:key:${doc.verificationMethod[0].publicKeyMultibase}`).toBe(await signingKeyOf(acct.did));
      for (const collection of desc.collections) {
        for (const reverse of [false, true]) {
          let cursor: string | undefined;
          let pages = 0;
          do {
            const [a, b] = await Promise.all([
              ours.com.atproto.repo.listRecords({ repo: acct.did, collection, limit: 100, cursor, reverse }),
              theirs.com.atproto.repo.listRecords({ repo: acct.did, collection, limit: 100, cursor, reverse }),
            ]);
            expect(a.data).toEqual(b.data);
            cursor = a.data.cursor;
            pages++;
          } while (cursor && pages < 30);
        }
      }
      const some = (await theirs.com.atproto.repo.listRecords({ repo: acct.did, collection: 'app.bsky.feed.post', limit: 5 })).data.records;
      for (const r of some) {
        const rkey = r.uri.split('/').pop()!;
        const [a, b] = await Promise.all([
          ours.com.atproto.repo.getRecord({ repo: acct.did, collection: 'app.bsky.feed.post', rkey }),
          theirs.com.atproto.repo.getRecord({ repo: acct.did, collection: 'app.bsky.feed.post', rkey }),
        ]);
        expect(a.data).toEqual(b.data);
      }
    }
    // A handle is accepted where a DID is.
    const byHandle = (await ours.com.atproto.repo.describeRepo({ repo: sample.alice.handle })).data;
    expect(byHandle.did).toBe(sample.alice.did);
  });

  it('sync.getRecord proofs verify, for a record held and one that is not', async () => {
    const bob = sample.bob;
    const key = await signingKeyOf(bob.did);
    const post = (await listAllRecords(pds, bob.did)).find((r) => r.collection === 'app.bsky.feed.post')!;
    const held = await get(`/xrpc/com.atproto.sync.getRecord?did=${bob.did}&collection=${post.collection}&rkey=${post.rkey}`);
    expect(held.status).toBe(200);
    const claims = await verifyRecords(held.bytes, bob.did, key);
    expect(claims.map((c) => `${c.collection}/${c.rkey}`)).toContain(`${post.collection}/${post.rkey}`);
    const absent = await get(`/xrpc/com.atproto.sync.getRecord?did=${bob.did}&collection=app.bsky.feed.post&rkey=3zzzzzzzzzzzz`);
    expect(absent.status).toBe(200);
    expect(await verifyRecords(absent.bytes, bob.did, key)).toEqual([]);
  });

  it('getLatestCommit, getRepoStatus, listRepos (paged) and getBlob answer as the PDS does', async () => {
    for (const acct of sample.all.filter((a) => a !== sample.alice)) {
      for (const nsid of ['com.atproto.sync.getLatestCommit', 'com.atproto.sync.getRepoStatus']) {
        const a = await get(`/xrpc/${nsid}?did=${acct.did}`);
        expect(a.body).toEqual(await xrpcQuery(pds, nsid, { did: acct.did }));
      }
    }
    const listed: unknown[] = [];
    let cursor: string | undefined;
    do {
      const page = await get(`/xrpc/com.atproto.sync.listRepos?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      listed.push(...page.body.repos);
      cursor = page.body.cursor;
    } while (cursor);
    const pdsRepos = (await xrpcQuery<{ repos: Array<{ did: string }> }>(pds, 'com.atproto.sync.listRepos', { limit: 1000 })).repos;
    const byDid = (xs: any[]) => [...xs].sort((x, y) => (x.did < y.did ? -1 : 1));
    // Alice's head moved in the since test above; the PDS's moved with it.
    expect(byDid(listed)).toEqual(byDid(pdsRepos));
    for (const blob of sample.blobs.slice(0, 3)) {
      const res = await get(`/xrpc/com.atproto.sync.getBlob?did=${blob.did}&cid=${blob.cid}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(res.bytes).equals(Buffer.from(await getBlob(pds, blob.did, blob.cid)))).toBe(true);
    }
  });
});

describe('bad input gets the right XRPC error, never a 500', () => {
  const did = () => sample.alice.did;
  const cases: Array<[string, () => string, number, string, RegExp?]> = [
    ['unknown DID', () => '/xrpc/com.atproto.sync.getRepo?did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 400, 'RepoNotFound'],
    ['unknown DID (repo.*)', () => '/xrpc/com.atproto.repo.describeRepo?repo=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 400, 'RepoNotFound'],
    ['malformed DID', () => '/xrpc/com.atproto.sync.getRepo?did=not-a-did', 400, 'InvalidRequest', /did must be a valid DID/],
    ['missing DID', () => '/xrpc/com.atproto.sync.getLatestCommit', 400, 'InvalidRequest', /did/],
    ['bad since', () => `/xrpc/com.atproto.sync.getRepo?did=${did()}&since=yesterday`, 400, 'InvalidRequest', /since/],
    ['huge limit', () => `/xrpc/com.atproto.repo.listRecords?repo=${did()}&collection=app.bsky.feed.post&limit=100000`, 400, 'InvalidRequest', /limit can not be greater than 100/],
    ['negative limit', () => `/xrpc/com.atproto.sync.listRepos?limit=-1`, 400, 'InvalidRequest', /limit/],
    ['non-numeric limit', () => `/xrpc/com.atproto.sync.listRepos?limit=lots`, 400, 'InvalidRequest', /limit/],
    ['bad listRecords cursor', () => `/xrpc/com.atproto.repo.listRecords?repo=${did()}&collection=app.bsky.feed.post&cursor=${'%2F'.repeat(3)}`, 400, 'InvalidRequest', /cursor/],
    ['bad listRepos cursor', () => `/xrpc/com.atproto.sync.listRepos?cursor=zzz`, 400, 'InvalidRequest', /cursor/],
    ['malformed NSID', () => `/xrpc/com.atproto.repo.listRecords?repo=${did()}&collection=not..an..nsid`, 400, 'InvalidRequest', /collection must be a valid NSID/],
    ['malformed rkey', () => `/xrpc/com.atproto.repo.getRecord?repo=${did()}&collection=app.bsky.feed.post&rkey=..`, 400, 'InvalidRequest', /rkey must be a valid record key/],
    ['record not held', () => `/xrpc/com.atproto.repo.getRecord?repo=${did()}&collection=app.bsky.feed.post&rkey=3zzzzzzzzzzzz`, 400, 'RecordNotFound'],
    ['blob not held', () => `/xrpc/com.atproto.sync.getBlob?did=${did()}&cid=bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`, 400, 'BlobNotFound'],
    ['repeated parameter', () => `/xrpc/com.atproto.sync.getLatestCommit?did=${did()}&did=${did()}`, 400, 'InvalidRequest', /more than once/],
    ['unknown method', () => '/xrpc/com.example.nothing.here', 501, 'MethodNotImplemented'],
    ['not a method name', () => '/xrpc/..%2F..%2Fetc', 400, 'InvalidRequest'],
    ['overlong URL', () => `/xrpc/com.atproto.sync.getRepo?did=${'x'.repeat(10_000)}`, 414, 'InvalidRequest'],
    ['URL past the HTTP parser\'s 16 KiB header limit', () => `/xrpc/com.atproto.sync.getRepo?did=${'x'.repeat(20_000)}`, 431, 'InvalidRequest', /16 KiB/],
  ];
  for (const [name, path, status, error, message] of cases) {
    it(name, async () => {
      const res = await get(path());
      expect(res.status).toBe(status);
      expect(res.body.error).toBe(error);
      expect(typeof res.body.message).toBe('string');
      if (message) expect(res.body.message).toMatch(message);
    });
  }

  it('requests the HTTP parser refuses get an XRPC error body too: headers past 16 KiB, a malformed request line', async () => {
    const { port, hostname } = new URL(serve.url);
    const raw = (request: string) =>
      new Promise<string>((resolve, reject) => {
        let got = '';
        const socket = connect(Number(port), hostname, () => socket.write(request));
        socket.on('data', (d) => (got += d));
        socket.on('end', () => resolve(got));
        socket.on('error', (err) => (got ? resolve(got) : reject(err)));
      });
    const cases: Array<[string, number, RegExp]> = [
      [`GET /xrpc/com.atproto.sync.listRepos HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, /16 KiB/],
      [`GET /xrpc/com.atproto.sync.listRepos HTTP/1.1\r\nhost: x\r\n${Array.from({ length: 600 }, (_, i) => `x-h${i}: ${'b'.repeat(30)}`).join('\r\n')}\r\n\r\n`, 431, /16 KiB/],
      ['NOT A REQUEST\r\n\r\n', 400, /malformed HTTP request/],
      ['GET /xrpc/com.atproto.sync.listRepos HTTP/9.9\r\nhost: x\r\n\r\n', 400, /malformed HTTP request/],
    ];
    for (const [request, status, message] of cases) {
      const answer = await raw(request);
      expect(answer.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      expect(body.error).toBe('InvalidRequest');
      expect(body.message).toMatch(message);
    }
  });

  it('admin: missing or wrong token, malformed and oversized bodies; the right token works', async () => {
    const body = JSON.stringify({ dids: [sample.carol.did] });
    const post = (headers: Record<string, string>, b: string | Uint8Array = body) =>
      get('/repos/add', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: b });
    expect(await post({})).toMatchObject({ status: 401, body: { error: 'AuthRequired' } });
    expect(await post({ authorization: 'Bearer nope' })).toMatchObject({ status: 401, body: { error: 'AuthRequired' } });
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    expect(await post(auth, '{"dids": ["not-a-did"]}')).toMatchObject({ status: 400, body: { error: 'InvalidRequest', message: expect.stringMatching(/body\.dids\.0 must be a valid DID/) } });
    expect(await post(auth, '{"dids": []')).toMatchObject({ status: 400, body: { error: 'InvalidRequest' } });
    expect(await post(auth, JSON.stringify({ dids: [sample.carol.did], extra: 1 }))).toMatchObject({ status: 400, body: { error: 'InvalidRequest' } });
    const huge = JSON.stringify({ dids: Array.from({ length: 60_000 }, (_, i) => `did:plc:${String(i).padStart(24, 'a')}`) });
    expect(await post(auth, huge)).toMatchObject({ status: 413, body: { error: 'PayloadTooLarge' } });
    expect(added).toEqual([]);
    expect(await post(auth)).toMatchObject({ status: 200 });
    expect(added).toEqual([[sample.carol.did]]);
    // The @atproto/tap client's own call, with the token as its admin password.
    const { Tap } = await import('@atproto/tap');
    await new Tap(serve.url, { adminPassword: ADMIN_TOKEN }).addRepos([sample.bob.did]);
    await expect(new Tap(serve.url, { adminPassword: 'wrong' }).addRepos([sample.bob.did])).rejects.toThrow();
    expect(added).toEqual([[sample.carol.did], [sample.bob.did]]);
  });

  it('a gone repo answers as its PDS did', async () => {
    const carol = sample.carol;
    await deactivateAccount(carol);
    expect((await backfill([carol.did]))[0]!.kind).toBe('gone');
    const ours = await get(`/xrpc/com.atproto.sync.getRepo?did=${carol.did}`);
    const theirs = await fetch(`${pds.pdsUrl}/xrpc/com.atproto.sync.getRepo?did=${carol.did}`);
    expect(ours.status).toBe(theirs.status);
    expect(ours.body.error).toBe(((await theirs.json()) as { error: string }).error);
    expect(ours.body.error).toBe('RepoDeactivated');
    const status = await get(`/xrpc/com.atproto.sync.getRepoStatus?did=${carol.did}`);
    expect(status.body).toEqual(await xrpcQuery(pds, 'com.atproto.sync.getRepoStatus', { did: carol.did }));
  });

  it("tap's resolveDid and getRepoInfo read what the mirror holds, in the shapes the client parses", async () => {
    const { Tap } = await import('@atproto/tap');
    const tap = new Tap(serve.url);
    const alice = sample.alice;
    // The client checks the document with @atproto/common's schema; compare it with PLC's.
    const doc = await tap.resolveDid(alice.did);
    const plc = (await (await fetch(`${pds.plcUrl}/${alice.did}`)).json()) as { alsoKnownAs: string[]; service: Array<{ serviceEndpoint: string }> };
    expect(doc?.id).toBe(alice.did);
    expect(doc?.alsoKnownAs).toEqual(plc.alsoKnownAs);
    expect(doc?.service?.[0]?.serviceEndpoint).toBe(plc.service[0]!.serviceEndpoint);
    // As a Multikey (the compressed did:key form), which this PLC's own document does not use.
    expect(`did:key:${doc?.verificationMethod?.[0]?.publicKeyMultibase}`).toBe(await signingKeyOf(alice.did));
    expect(await tap.resolveDid('did:plc:aaaaaaaaaaaaaaaaaaaaaaaa')).toBeNull();

    const info = await tap.getRepoInfo(alice.did);
    const latest = (await xrpcQuery(pds, 'com.atproto.sync.getLatestCommit', { did: alice.did })) as { rev: string };
    expect(info).toMatchObject({ did: alice.did, handle: alice.handle, state: 'active', rev: latest.rev, records: (await listAllRecords(pds, alice.did)).length, retries: 0 });
    expect(info.error).toBeUndefined();
    await expect(tap.getRepoInfo('did:plc:aaaaaaaaaaaaaaaaaaaaaaaa')).rejects.toThrow(/Not Found/);
    for (const path of ['/info/not-a-did', '/resolve/did:plc:%zz']) {
      const bad = await get(path);
      expect([bad.status, bad.body.error]).toEqual([400, 'InvalidRequest']);
    }
    expect((await get(`/info/${alice.did}`, { method: 'POST' })).status).toBe(405);
  });

  it('metrics count requests by route and status, and bytes served', async () => {
    const text = (await get('/metrics')).bytes;
    const s = Buffer.from(text).toString();
    expect(s).toMatch(/repowalk_serve_requests_total\{route="com.atproto.sync.getRepo",status="200"\} \d+/);
    expect(s).toMatch(/repowalk_serve_requests_total\{route="com.atproto.sync.getRepo",status="400"\} \d+/);
    expect(s).toMatch(/repowalk_serve_bytes_total\{route="com.atproto.sync.getRepo"\} [1-9]/);
    expect(s).toMatch(/repowalk_serve_requests_total\{route="\/info",status="200"\} [1-9]/);
    expect(s).not.toContain(ADMIN_TOKEN);
  });
});

describe('event stream, with the @atproto/tap client', () => {
  type Seen = { id: number; type: string; did: string; collection?: string; rkey?: string; action?: string; live?: boolean; cid?: string; status?: string; isActive?: boolean };
  async function recordEventIds(): Promise<number[]> {
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM events WHERE kind IN ('create', 'update', 'delete') ORDER BY id`);
    return rows.map((r) => Number(r.id));
  }
  async function until(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('receives every record event of a backfill, acks, reconnects, and ends with no loss and no duplicates', async () => {
    const { Tap } = await import('@atproto/tap');
    const tap = new Tap(`${serve.url}/?consumer=tap-e2e`);
    // An event counts as processed once its ack has reached the server; one whose ack never got
    // out (the consumer went away meanwhile) is sent again, as tap does.
    const seen: Seen[] = [];
    const errors: Error[] = [];
    // The handler stops at the 300th event until the test lets it go.
    let pauseAt: number | undefined = 300;
    let letGo!: () => void;
    const gate = new Promise<void>((r) => (letGo = r));
    const open = () => {
      const channel = tap.channel({
        onEvent: async (evt, opts) => {
          if (evt.type === 'record' && evt.action !== 'delete') expect(evt.record).toBeDefined();
          if (pauseAt !== undefined && seen.length >= pauseAt) await gate;
          // Gone before processing it: not acked, so it comes again.
          if (opts.signal.aborted) return;
          await opts.ack();
          seen.push(evt.type === 'record' ? { id: evt.id, type: evt.type, did: evt.did, collection: evt.collection, rkey: evt.rkey, action: evt.action, live: evt.live, ...(evt.cid ? { cid: evt.cid } : {}) } : { id: evt.id, type: evt.type, did: evt.did, status: evt.status, isActive: evt.isActive });
        },
        onError: (err) => errors.push(err),
      });
      return { channel, running: channel.start() };
    };
    const recordsSeen = () => seen.filter((e) => e.type === 'record').length;

    // The consumer goes away mid-stream and comes back: it resumes after what it acked.
    const all = await recordEventIds();
    const first = open();
    await until('the first events', () => seen.length >= 300);
    const destroyed = first.channel.destroy();
    pauseAt = undefined;
    letGo();
    await destroyed;
    await first.running;
    expect(recordsSeen()).toBeLessThan(all.length);
    const second = open();
    await until('every event of the backfill', () => recordsSeen() >= all.length);
    await new Promise((r) => setTimeout(r, 300));

    // The server goes away under it (a crash, a network cut); the client reconnects by itself
    // and gets what the mirror stored meanwhile.
    serve.stream.cutAll();
    await createRecord(sample.bob, 'app.bsky.feed.post', { $type: 'app.bsky.feed.post', text: 'while away', createdAt: new Date().toISOString() });
    expect((await backfill([sample.bob.did]))[0]!.kind).toBe('imported');
    const after = await recordEventIds();
    expect(after.length).toBeGreaterThan(all.length);
    await until('the new events', () => recordsSeen() >= after.length);
    await new Promise((r) => setTimeout(r, 300));
    await second.channel.destroy();
    await second.running;

    const ids = seen.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length); // no duplicates
    expect(seen.filter((e) => e.type === 'record').map((e) => e.id)).toEqual(after); // no loss, in order
    expect(seen.every((e) => e.type !== 'record' || e.live === false)).toBe(true); // backfill events are not live
    expect(errors).toEqual([]);
    // Carol's deactivation (the gone test above) came as an identity event.
    expect(seen).toContainEqual(expect.objectContaining({ type: 'identity', did: sample.carol.did, status: 'deactivated', isActive: false }));
    // What the events say is what the PDS holds.
    const bobRecords = (await listAllRecords(pds, sample.bob.did)).map((r) => `${r.collection}/${r.rkey}@${r.cid}`);
    const streamed = seen.filter((e) => e.did === sample.bob.did && e.action === 'create').map((e) => `${e.collection}/${e.rkey}@${e.cid}`);
    expect(new Set(streamed)).toEqual(new Set(bobRecords));
  });

  it('replays from a cursor: a consumer reconnecting with its last id resumes without loss', async () => {
    const { WebSocket } = await import('ws');
    const ids = await recordEventIds();
    const collect = (cursor: number, stopAfter: number) =>
      new Promise<number[]>((resolve, reject) => {
        const got: number[] = [];
        const ws = new WebSocket(`${serve.url.replace('http', 'ws')}/channel?cursor=${cursor}`);
        ws.on('message', (data) => {
          if (got.length >= stopAfter) return; // already on the way when we closed
          const msg = JSON.parse(String(data)) as { id: number; type: string };
          if (msg.type === 'record') got.push(msg.id);
          if (got.length >= stopAfter) {
            ws.close();
            resolve(got);
          }
        });
        ws.on('error', reject);
      });
    const firstPart = await collect(0, 100);
    const rest = await collect(firstPart.at(-1)!, ids.length - 100);
    expect([...firstPart, ...rest]).toEqual(ids);
    // A bad cursor is refused before the upgrade, with the XRPC error shape.
    const bad = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const ws = new WebSocket(`${serve.url.replace('http', 'ws')}/channel?cursor=minus-one`);
      ws.on('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      ws.on('open', () => reject(new Error('a bad cursor was accepted')));
      ws.on('error', () => {});
    });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: 'InvalidRequest', message: expect.stringMatching(/cursor/) });
  });

  it('a client that stops reading is dropped with a reason, and server memory stays bounded', async () => {
    // A log far larger than what the kernel's socket buffers take on loopback (tcp_rmem up to
    // 32 MB here) and the bound: 150,000 more events (some 60 MB of messages) naming existing records.
    await pool.query(
      `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin)
       SELECT e.did, 'update', e.collection, e.rkey || '-' || g, e.cid, e.rev, 'live'
       FROM (SELECT * FROM events WHERE kind = 'create' ORDER BY id LIMIT 1) e, generate_series(1, 150000) g`,
    );
    const highWaterBytes = 256 * 1024;
    const pageSize = 500;
    const small = await startServeServer({ pool, store: stores.blobs, stream: { highWaterBytes, pageSize, stallTimeoutMs: 2000 }, log: () => {} });
    try {
      const { WebSocket } = await import('ws');
      // Live memory (after a full GC), sampled while the client stalls: garbage is not growth.
      // Socket buffers are Buffers, outside the JS heap: `external` counts them.
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as () => void;
      const live = () => {
        gc();
        const m = process.memoryUsage();
        return m.heapUsed + m.external;
      };
      const heapBefore = live();
      let peak = heapBefore;
      const sampler = setInterval(() => (peak = Math.max(peak, live())), 100);
      const ws = new WebSocket(`${small.url.replace('http', 'ws')}/channel?cursor=0`);
      await new Promise((r) => ws.once('open', r));
      // Stop reading: the kernel buffers fill, then the server's send buffer.
      (ws as any)._socket.pause();
      let maxBuffered = 0;
      await until('the stalled client to be dropped', () => {
        const st = small.stream.stats();
        for (const c of st) maxBuffered = Math.max(maxBuffered, c.maxBufferedBytes);
        return st.length === 0;
      }, 120_000);
      clearInterval(sampler);
      const grew = peak - heapBefore;
      // The stated bound: one page of messages plus the high-water mark, per client, over what
      // the process holds anyway (pool, caches). 150,000 events would be about 60 MB queued.
      console.log(`[serve e2e] stalled client: live memory grew at most ${(grew / 1e6).toFixed(1)} MB (bound 8 MB); send buffer peaked at ${maxBuffered} bytes (bound ${highWaterBytes} + one page)`);
      // One page is at most pageSize messages of a few hundred bytes each here.
      expect(maxBuffered).toBeGreaterThan(0);
      expect(maxBuffered).toBeLessThan(highWaterBytes + pageSize * 1024);
      expect(grew).toBeLessThan(8 * 1024 * 1024);
      const metricsText = await (await fetch(`${small.url}/metrics`)).text();
      expect(metricsText).toMatch(/repowalk_serve_stream_dropped_total\{reason="slow"\} [1-9]/);
      const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
      (ws as any)._socket.resume();
      expect([1008, 1006]).toContain(await closed);
      ws.terminate();
    } finally {
      await small.close();
    }
  }, 180_000);
});
