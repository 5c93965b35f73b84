/**
 * The validate walk on a real mirror with faults put in on purpose. Each fault is made the way
 * a buggy writer that keeps the rest of its books would make it (a lost index row also lowers
 * the block's refcount and the repo's counts), so that exactly one check has something to say:
 * the test asserts that check finds exactly that fault, and no check finds anything else.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import * as CID from '@atcute/cid';
import { freshDatabase } from '../../test/stack.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import { importRepo } from '../../backfill/import.ts';
import { cidBytes } from '../../atproto/cid.ts';
import { readCar } from '../../atproto/car.ts';
import type { VerifiedRepo } from '../../atproto/verify.ts';
import { newKeypair } from '../../atproto/testing/make-repo.ts';
import { craftRepo } from '../../atproto/testing/craft-mst.ts';
import { keysOfLayer } from '../../atproto/testing/keys.ts';
import { cidFor } from '../../atproto/testing/car-edit.ts';
import { MemoryFindings, listFindings, type Finding } from '../findings.ts';
import type { Node } from '../nodes.ts';
import { runWalk } from '../run.ts';
import { buildMirror, testDids } from '../testing.ts';
import { VALIDATE_CHECKS } from './validate/index.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
const dids = testDids('validate', 3);
const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_validate'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-validate-'));
  store = new LocalBlobStore(dir);
  await buildMirror({ pool, blobs: store }, dids.map((did, i) => ({ did, records: 60 + 20 * i })));
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function validate(opts: { roots?: Node[]; walkId?: string } = {}): Promise<{ findings: Finding[]; totals: Awaited<ReturnType<typeof runWalk>>['totals'] }> {
  const findings = new MemoryFindings();
  const { totals } = await runWalk({ pool, store }, { type: 'validate' }, opts.roots ?? roots, { findings, ...(opts.walkId ? { walkId: opts.walkId } : {}) });
  return { findings: findings.findings, totals };
}

/**
 * A record of `did`, one whose block no other repo's index names when there is one: repos built
 * by the same generator share their first records, and a fault in a shared block is found once
 * per repo that reaches it.
 */
async function ownRecord(did: string): Promise<{ collection: string; rkey: string; cid: Buffer }> {
  const { rows } = await pool.query(
    `SELECT r.collection, r.rkey, r.cid FROM records r WHERE r.did = $1
     ORDER BY EXISTS (SELECT 1 FROM records o WHERE o.cid = r.cid AND o.did <> r.did), r.rkey LIMIT 1`,
    [did],
  );
  return rows[0];
}

const cidString = (b: Uint8Array) => CID.toString(CID.decode(b));

describe('validate', () => {
  let clean: { findings: Finding[] };
  beforeEach(async () => {
    clean ??= await validate();
  });

  it('finds nothing on an intact mirror, and runs every check', async () => {
    const { findings, totals } = await validate();
    expect(findings).toEqual([]);
    expect(VALIDATE_CHECKS.length).toBe(9);
    for (const type of ['Repo', 'Commit', 'MstNode', 'Record', 'RecordRow', 'Event'] as const) {
      expect(totals.types[type]?.checked, type).toBe(totals.types[type]?.walked);
      expect(totals.types[type]?.walked, type).toBeGreaterThan(0);
    }
    expect(totals.counters['validate.index-mst.skipped']).toBeUndefined();
  });

  it('a record index row deleted: index-mst names the row, nothing else', async () => {
    const did = dids[1]!;
    const rec = await ownRecord(did);
    await pool.query('DELETE FROM records WHERE did = $1 AND collection = $2 AND rkey = $3', [did, rec.collection, rec.rkey]);
    await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rec.cid]);
    await pool.query('UPDATE repos SET records_count = records_count - 1 WHERE did = $1', [did]);
    await pool.query('UPDATE collection_counts SET count = count - 1 WHERE did = $1 AND collection = $2', [did, rec.collection]);
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['index-mst', 'RecordRow', `${did}/${rec.collection}/${rec.rkey}`]]);
      expect(findings[0]!.detail).toMatch(/in the MST under the head \(b\w+\) but not in the record index/);
    } finally {
      await pool.query('INSERT INTO records (did, collection, rkey, cid) VALUES ($1, $2, $3, $4)', [did, rec.collection, rec.rkey, rec.cid]);
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
      await pool.query('UPDATE repos SET records_count = records_count + 1 WHERE did = $1', [did]);
      await pool.query('UPDATE collection_counts SET count = count + 1 WHERE did = $1 AND collection = $2', [did, rec.collection]);
    }
    expect((await validate()).findings).toEqual([]);
  });

  it('a bogus record index row added: index-mst names the row, nothing else', async () => {
    const did = dids[0]!;
    const rec = await ownRecord(did);
    const bogus = { collection: 'app.bsky.feed.post', rkey: '3zzzzzzzzzzz2' };
    await pool.query('INSERT INTO records (did, collection, rkey, cid) VALUES ($1, $2, $3, $4)', [did, bogus.collection, bogus.rkey, rec.cid]);
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
    await pool.query('UPDATE repos SET records_count = records_count + 1 WHERE did = $1', [did]);
    await pool.query('UPDATE collection_counts SET count = count + 1 WHERE did = $1 AND collection = $2', [did, bogus.collection]);
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['index-mst', 'RecordRow', `${did}/${bogus.collection}/${bogus.rkey}`]]);
      expect(findings[0]!.detail).toMatch(/in the record index \(b\w+\) but not in the MST/);
    } finally {
      await pool.query('DELETE FROM records WHERE did = $1 AND collection = $2 AND rkey = $3', [did, bogus.collection, bogus.rkey]);
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rec.cid]);
      await pool.query('UPDATE repos SET records_count = records_count - 1 WHERE did = $1', [did]);
      await pool.query('UPDATE collection_counts SET count = count - 1 WHERE did = $1 AND collection = $2', [did, bogus.collection]);
    }
  });

  it('a refcount off by one: refcount names the block, nothing else', async () => {
    const rec = await ownRecord(dids[2]!);
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['refcount', 'Record', cidString(rec.cid)]]);
      expect(findings[0]!.detail).toBe('refcount is 3, but 2 stored rows reference the block');
    } finally {
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rec.cid]);
    }
  });

  it('an event pointing at a missing block: event-block names the event, nothing else', async () => {
    const missing = cidBytes(cidFor(randomBytes(40)));
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin) VALUES ($1, 'create', 'app.bsky.feed.post', '3zzzzzzzzzzz3', $2, 'x', 'live') RETURNING id`,
      [dids[0], missing],
    );
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['event-block', 'Event', rows[0]!.id]]);
      expect(findings[0]!.detail).toContain(cidString(missing));
      expect(findings[0]!.route.map((h) => h.edge ?? null)).toEqual([null, 'RepoToEvent']);
    } finally {
      await pool.query('DELETE FROM events WHERE id = $1', [rows[0]!.id]);
    }
  });

  it('bytes flipped inside a pack: block-hash names the CID', async () => {
    const rec = await ownRecord(dids[2]!);
    const { rows } = await pool.query('SELECT p.key, b.byte_offset, b.byte_length FROM blocks b JOIN packs p ON p.id = b.pack_id WHERE b.cid = $1', [rec.cid]);
    const { key, byte_offset, byte_length } = rows[0];
    const at = Number(byte_offset) + Math.floor(byte_length / 2);
    const fh = await open(join(dir, ...key.split('/')), 'r+');
    const flip = async () => {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] = b[0]! ^ 0x20;
      await fh.write(b, 0, 1, at);
    };
    await flip();
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['block-hash', 'Record', cidString(rec.cid)]]);
      expect(findings[0]!.detail).toContain(key);
    } finally {
      await flip();
      await fh.close();
    }
  });

  it('a signing key that does not match: commit-signature names the commit, nothing else', async () => {
    const did = dids[1]!;
    const { rows } = await pool.query('SELECT signing_key, head_cid FROM repos WHERE did = $1', [did]);
    await pool.query('UPDATE repos SET signing_key = $2 WHERE did = $1', [did, (await newKeypair()).did()]);
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['commit-signature', 'Commit', cidString(rows[0].head_cid)]]);
    } finally {
      await pool.query('UPDATE repos SET signing_key = $2 WHERE did = $1', [did, rows[0].signing_key]);
    }
  });

  it('an MST that breaks an invariant: mst names the node, nothing else', async () => {
    // A subtree that skips a layer, stored as if it had been verified.
    const [layer0, layer2] = await Promise.all([keysOfLayer(0, 1), keysOfLayer(2, 1)]);
    const did = testDids('mstfault', 1)[0]!;
    const keypair = await newKeypair();
    const crafted = await craftRepo({ did, keypair, tree: { left: { entries: [{ key: layer0[0]! }] }, entries: [{ key: layer2[0]! }] } });
    const { blocks } = readCar(crafted.car);
    const repo: VerifiedRepo = {
      did,
      version: 3,
      rev: '3jzfcijpj2z2a',
      commitCid: crafted.commitCid,
      dataCid: crafted.dataCid,
      blocks,
      records: crafted.records,
      mstNodes: crafted.nodes,
      mstHeight: 2,
      carBytes: crafted.car.length,
      unreachableBlocks: 0,
    };
    await importRepo({ pool, blobs: store }, { repo, pds: 'https://pds.invalid', handle: undefined, signingKey: crafted.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
    const { findings, totals } = await validate({ roots: [{ type: 'Repo', did }] });
    expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['mst', 'MstNode', crafted.nodes[1]]]);
    expect(findings[0]!.detail).toBe(`key of layer 0 is in a node of layer 1 (key ${JSON.stringify(layer0[0])})`);
    expect(totals.counters['validate.index-mst.skipped']).toBe(1);
  });

  it('a strong ref into a mirrored repo whose record we do not hold: strong-ref, as info', async () => {
    // Generated likes and reposts reference did:plc:other<i % 100>; pretend we mirror other3.
    await pool.query(`INSERT INTO repos (did, status) VALUES ('did:plc:other3', 'active')`);
    try {
      const { findings } = await validate();
      expect(findings.length).toBeGreaterThan(0);
      for (const f of findings) {
        expect(f).toMatchObject({ check: 'strong-ref', severity: 'info', nodeType: 'Record' });
        expect(f.detail).toContain('at://did:plc:other3/');
      }
    } finally {
      await pool.query(`DELETE FROM repos WHERE did = 'did:plc:other3'`);
    }
  });

  it('writes findings to walk_findings once, however often a walk id is re-run', async () => {
    const rec = await ownRecord(dids[0]!);
    await pool.query('UPDATE blocks SET refcount = refcount + 2 WHERE cid = $1', [rec.cid]);
    try {
      await validate({ walkId: 'validate-test-1' });
      await validate({ walkId: 'validate-test-1' });
      const stored = await listFindings(pool, 'validate-test-1');
      expect(stored).toHaveLength(1);
      expect(stored[0]).toMatchObject({ check: 'refcount', severity: 'error', nodeType: 'Record', key: cidString(rec.cid) });
      expect(dids.map((d) => `Repo:${d}`)).toContain(stored[0]!.route[0]!.node);
      expect(stored[0]!.route.at(-1)!.node).toBe(`Record:${cidString(rec.cid)}`);
    } finally {
      await pool.query('UPDATE blocks SET refcount = refcount - 2 WHERE cid = $1', [rec.cid]);
    }
  });
});
