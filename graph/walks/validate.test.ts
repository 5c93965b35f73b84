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
import { buildMirror, testDids } from '../../test/mirror.ts';
import { VALIDATE_CHECKS, type ValidateCheck } from './validate/index.ts';

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

async function validate(opts: { roots?: Node[]; walkId?: string; checks?: ValidateCheck[] } = {}): Promise<{ findings: Finding[]; totals: Awaited<ReturnType<typeof runWalk>>['totals'] }> {
  const findings = new MemoryFindings();
  const spec = { type: 'validate', ...(opts.checks ? { validate: { checks: opts.checks } } : {}) } as const;
  const { totals } = await runWalk({ pool, store }, spec, opts.roots ?? roots, { findings, ...(opts.walkId ? { walkId: opts.walkId } : {}) });
  return { findings: findings.findings, totals };
}

/**
 * Records of `did` (the first `n`), ones whose block no other repo's index names when there are
 * such: repos built by the same generator share their first records, and a fault in a shared
 * block is found once per repo that reaches it.
 */
async function ownRecords(did: string, n: number): Promise<{ collection: string; rkey: string; cid: Buffer }[]> {
  const { rows } = await pool.query(
    `SELECT r.collection, r.rkey, r.cid FROM records r WHERE r.did = $1
     ORDER BY EXISTS (SELECT 1 FROM records o WHERE o.cid = r.cid AND o.did <> r.did), r.rkey LIMIT $2`,
    [did, n],
  );
  return rows;
}

const ownRecord = async (did: string) => (await ownRecords(did, 1))[0]!;

/** Flips one bit in the middle of `cid`'s bytes in its pack; call it again to flip it back. */
async function bitFlipper(cid: Uint8Array): Promise<{ packKey: string; flip: () => Promise<void>; close: () => Promise<void> }> {
  const { rows } = await pool.query('SELECT p.key, b.byte_offset, b.byte_length FROM blocks b JOIN packs p ON p.id = b.pack_id WHERE b.cid = $1', [cid]);
  const { key, byte_offset, byte_length } = rows[0];
  const at = Number(byte_offset) + Math.floor(byte_length / 2);
  const fh = await open(join(dir, ...key.split('/')), 'r+');
  const flip = async () => {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0x20;
    await fh.write(b, 0, 1, at);
  };
  return { packKey: key, flip, close: () => fh.close() };
}

/**
 * Stores, as if verified, a repo whose MST has a subtree that skips a layer (once per DID);
 * returns the CID of the node at fault and the key on the wrong layer.
 */
const craftedMst = new Map<string, Promise<{ node: string; key: string }>>();
function importBrokenMst(did: string): Promise<{ node: string; key: string }> {
  let made = craftedMst.get(did);
  if (!made) {
    made = (async () => {
      const [layer0, layer2] = await Promise.all([keysOfLayer(0, 1), keysOfLayer(2, 1)]);
      const crafted = await craftRepo({ did, keypair: await newKeypair(), tree: { left: { entries: [{ key: layer0[0]! }] }, entries: [{ key: layer2[0]! }] } });
      const repo: VerifiedRepo = {
        did,
        version: 3,
        rev: '3jzfcijpj2z2a',
        commitCid: crafted.commitCid,
        dataCid: crafted.dataCid,
        blocks: readCar(crafted.car).blocks,
        records: crafted.records,
        mstNodes: crafted.nodes,
        mstHeight: 2,
        carBytes: crafted.car.length,
        unreachableBlocks: 0,
      };
      await importRepo({ pool, blobs: store }, { repo, pds: 'https://pds.invalid', handle: undefined, signingKey: crafted.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
      return { node: crafted.nodes[1]!, key: layer0[0]! };
    })();
    craftedMst.set(did, made);
  }
  return made;
}

/** Where a planted fault must be found: node type and key (any key for strong-ref, whose records are many). */
type Expected = [string, string | ReturnType<typeof expect.any>];

/**
 * One fault for every check, each kept to its own place and made with the books kept (as the
 * single-fault tests below make them), over `roots` plus a repo with a broken MST. Returns where
 * each check must find its fault, and how to undo every fault but the stored broken repo.
 */
async function plantOneFaultPerCheck(): Promise<{ roots: Node[]; at: Record<ValidateCheck, Expected>; undo: () => Promise<void> }> {
  const undo: (() => Promise<unknown>)[] = [];
  const mstDid = testDids('mstevery', 1)[0]!;
  const broken = await importBrokenMst(mstDid);
  try {
    // dids[2]: a record's bytes flipped in its pack; another record's refcount off by one.
    const [flipped, counted] = await ownRecords(dids[2]!, 2);
    const flipper = await bitFlipper(flipped!.cid);
    await flipper.flip();
    undo.push(async () => {
      await flipper.flip();
      await flipper.close();
    });
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [counted!.cid]);
    undo.push(() => pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [counted!.cid]));

    // dids[1]: a signing key that does not match; a record index row lost (books kept).
    const { rows: [repo1] } = await pool.query('SELECT signing_key, head_cid FROM repos WHERE did = $1', [dids[1]]);
    await pool.query('UPDATE repos SET signing_key = $2 WHERE did = $1', [dids[1], (await newKeypair()).did()]);
    undo.push(() => pool.query('UPDATE repos SET signing_key = $2 WHERE did = $1', [dids[1], repo1.signing_key]));
    const lost = await ownRecord(dids[1]!);
    await pool.query('DELETE FROM records WHERE did = $1 AND collection = $2 AND rkey = $3', [dids[1], lost.collection, lost.rkey]);
    await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [lost.cid]);
    await pool.query('UPDATE repos SET records_count = records_count - 1 WHERE did = $1', [dids[1]]);
    await pool.query('UPDATE collection_counts SET count = count - 1 WHERE did = $1 AND collection = $2', [dids[1], lost.collection]);
    undo.push(async () => {
      await pool.query('INSERT INTO records (did, collection, rkey, cid) VALUES ($1, $2, $3, $4)', [dids[1], lost.collection, lost.rkey, lost.cid]);
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [lost.cid]);
      await pool.query('UPDATE repos SET records_count = records_count + 1 WHERE did = $1', [dids[1]]);
      await pool.query('UPDATE collection_counts SET count = count + 1 WHERE did = $1 AND collection = $2', [dids[1], lost.collection]);
    });

    // dids[0]: a record row naming a block the index lacks; an event naming one; records_count off.
    const renamed = await ownRecord(dids[0]!);
    const unindexed = cidBytes(cidFor(randomBytes(40)));
    await pool.query('UPDATE records SET cid = $4 WHERE did = $1 AND collection = $2 AND rkey = $3', [dids[0], renamed.collection, renamed.rkey, unindexed]);
    await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [renamed.cid]);
    undo.push(async () => {
      await pool.query('UPDATE records SET cid = $4 WHERE did = $1 AND collection = $2 AND rkey = $3', [dids[0], renamed.collection, renamed.rkey, renamed.cid]);
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [renamed.cid]);
    });
    const { rows: [event] } = await pool.query<{ id: string }>(
      `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin) VALUES ($1, 'create', 'app.bsky.feed.post', '3zzzzzzzzzzz3', $2, 'x', 'live') RETURNING id`,
      [dids[0], cidBytes(cidFor(randomBytes(40)))],
    );
    undo.push(() => pool.query('DELETE FROM events WHERE id = $1', [event!.id]));
    await pool.query('UPDATE repos SET records_count = records_count + 5 WHERE did = $1', [dids[0]]);
    undo.push(() => pool.query('UPDATE repos SET records_count = records_count - 5 WHERE did = $1', [dids[0]]));

    // A repo the generated likes and reposts point into, now mirrored without their records.
    await pool.query(`INSERT INTO repos (did, status) VALUES ('did:plc:other3', 'active')`);
    undo.push(() => pool.query(`DELETE FROM repos WHERE did = 'did:plc:other3'`));

    const rowKey = (did: string, r: { collection: string; rkey: string }) => `${did}/${r.collection}/${r.rkey}`;
    return {
      roots: [...roots, { type: 'Repo', did: mstDid }],
      at: {
        'block-hash': ['Record', cidString(flipped!.cid)],
        'commit-signature': ['Commit', cidString(repo1.head_cid)],
        mst: ['MstNode', broken.node],
        'index-mst': ['RecordRow', rowKey(dids[1]!, lost)],
        'record-block': ['RecordRow', rowKey(dids[0]!, renamed)],
        refcount: ['Record', cidString(counted!.cid)],
        'event-block': ['Event', event!.id],
        'repo-state': ['Repo', dids[0]!],
        'strong-ref': ['Record', expect.any(String)],
      },
      undo: async () => {
        for (const u of undo.reverse()) await u();
      },
    };
  } catch (err) {
    for (const u of undo.reverse()) await u();
    throw err;
  }
}

const cidString = (b: Uint8Array) => CID.toString(CID.decode(b));

describe('validate', () => {
  let clean: { findings: Finding[] };
  beforeEach(async () => {
    clean ??= await validate();
  });

  it('finds nothing on an intact mirror, and checks every node', async () => {
    const { findings, totals } = await validate();
    expect(findings).toEqual([]);
    for (const type of ['Repo', 'Commit', 'MstNode', 'Record', 'RecordRow', 'Event'] as const) {
      expect(totals.types[type]?.checked, type).toBe(totals.types[type]?.walked);
      expect(totals.types[type]?.walked, type).toBeGreaterThan(0);
    }
    expect(totals.counters['validate.index-mst.skipped']).toBeUndefined();
  });

  it('runs every check: with one fault planted for each, each check finds its own', async () => {
    const planted = await plantOneFaultPerCheck();
    try {
      const { findings } = await validate({ roots: planted.roots });
      for (const check of VALIDATE_CHECKS) {
        expect(findings.filter((f) => f.check === check).map((f) => [f.nodeType, f.key]), check).toContainEqual(planted.at[check]);
      }
      // Nothing but the planted faults: the row naming an unindexed block also differs from the
      // MST (index-mst sees it too), and every like of other3 is a strong-ref.
      const rest = findings.filter((f) => f.check !== 'strong-ref' && !(f.check === 'index-mst' && f.key === planted.at['record-block'][1]));
      expect(rest.map((f) => [f.check, f.nodeType, f.key]).sort()).toEqual(VALIDATE_CHECKS.filter((c) => c !== 'strong-ref').map((c) => [c, ...planted.at[c]]).sort());
    } finally {
      await planted.undo();
    }
    expect((await validate()).findings).toEqual([]);
  });

  it('runs only the checks chosen, and each chosen check alone still finds its fault', async () => {
    const planted = await plantOneFaultPerCheck();
    try {
      for (const check of VALIDATE_CHECKS) {
        const { findings } = await validate({ roots: planted.roots, checks: [check] });
        expect([...new Set(findings.map((f) => f.check))], check).toEqual([check]);
        expect(findings.map((f) => [f.nodeType, f.key]), check).toContainEqual(planted.at[check]);
      }
      const two = await validate({ roots: planted.roots, checks: ['refcount', 'event-block'] });
      expect(two.findings.map((f) => [f.check, f.nodeType, f.key]).sort()).toEqual([['event-block', ...planted.at['event-block']], ['refcount', ...planted.at.refcount]].sort());
      // Without the MST walked below its root, index-mst cannot judge and does not run.
      const shallow = await runWalk({ pool, store }, { type: 'validate', validate: { checks: ['index-mst'] }, filter: { excludeEdges: ['MstNodeToMstNode'] } }, planted.roots, { findings: new MemoryFindings() });
      expect(shallow.totals.findings).toEqual({});
      await expect(validate({ checks: ['refcount', 'nope' as ValidateCheck] })).rejects.toThrow(/unknown check "nope"; known: block-hash, /);
    } finally {
      await planted.undo();
    }
  });

  it('a record index row naming a block the index lacks: record-block names the row; index-mst sees the CID differ', async () => {
    const did = dids[2]!;
    const rec = await ownRecord(did);
    const unindexed = cidBytes(cidFor(randomBytes(40)));
    await pool.query('UPDATE records SET cid = $4 WHERE did = $1 AND collection = $2 AND rkey = $3', [did, rec.collection, rec.rkey, unindexed]);
    await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rec.cid]);
    try {
      const { findings } = await validate();
      const key = `${did}/${rec.collection}/${rec.rkey}`;
      expect(findings.map((f) => [f.check, f.nodeType, f.key]).sort()).toEqual([['index-mst', 'RecordRow', key], ['record-block', 'RecordRow', key]]);
      const recordBlock = findings.find((f) => f.check === 'record-block')!;
      expect(recordBlock.detail).toBe(`names block ${cidString(unindexed)}, which is not in the block index`);
      expect(recordBlock.route.map((h) => h.edge ?? null)).toEqual([null, 'RepoToRecordRow']);
    } finally {
      await pool.query('UPDATE records SET cid = $4 WHERE did = $1 AND collection = $2 AND rkey = $3', [did, rec.collection, rec.rkey, rec.cid]);
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
    }
    expect((await validate()).findings).toEqual([]);
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

  it('a refcount off by one on a record block another repo stored: found from the Repo read, then counted again alone (a refcount above the references)', async () => {
    // A record dids[1] shares with dids[0], indexed in dids[0]'s pack, which the walk of dids[1]
    // does not read in bulk (as a pack many repos filled would not be).
    const { rows } = await pool.query<{ cid: Buffer }>(
      `SELECT r.cid FROM records r JOIN records o ON o.cid = r.cid AND o.did = $2 WHERE r.did = $1 ORDER BY r.rkey LIMIT 1`,
      [dids[1], dids[0]],
    );
    const shared = rows[0]!.cid;
    const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
    let perBlock = 0;
    (pool as unknown as { query: typeof query }).query = (...a: unknown[]) => {
      // The per-block comparison takes the CIDs as one concatenated bytea.
      if (typeof a[0] === 'string' && a[0].includes('FROM records x WHERE x.cid = c.cid') && ((a[1] as unknown[])[0] as Buffer).includes(shared)) perBlock++;
      return query(...a);
    };
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [shared]);
    try {
      const findings = new MemoryFindings();
      await runWalk({ pool, store }, { type: 'validate' }, [roots[1]!], { findings, repoBatch: { prefetchShare: 0.99 } });
      expect(findings.findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['refcount', 'Record', cidString(shared)]]);
      // The Repo read found it; being above the batch's count, it was counted again mirror-wide once.
      expect(perBlock).toBe(1);
    } finally {
      (pool as unknown as { query: typeof query }).query = query;
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [shared]);
    }
  });

  it('a refcount off on MST nodes another repo stored: found by their lookup, whose disagreement alone is counted again mirror-wide', async () => {
    // dids[0]'s MST nodes (its pack's blocks that are neither records nor its head); those dids[1]'s tree shares are looked up alone.
    const { rows } = await pool.query<{ cid: Buffer }>(
      `SELECT b.cid FROM blocks b JOIN repos h ON h.did = $1 JOIN blocks hb ON hb.cid = h.head_cid
       WHERE b.pack_id = hb.pack_id AND b.cid <> h.head_cid AND NOT EXISTS (SELECT 1 FROM records r WHERE r.cid = b.cid)`,
      [dids[0]],
    );
    const mst = rows.map((r) => r.cid);
    const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
    // dids[0]'s pack not read in bulk for dids[1], as a pack many repos filled would not be: its
    // MST nodes are looked up, their rows counted with the lookup. Intact, nothing more is asked:
    // no statement reads `repos` for heads (no index on `head_cid`: a pass over the table).
    const sql: string[] = [];
    const intact = new MemoryFindings();
    (pool as unknown as { query: typeof query }).query = (...a: unknown[]) => {
      if (typeof a[0] === 'string') sql.push(a[0]);
      return query(...a);
    };
    try {
      await runWalk({ pool, store }, { type: 'validate' }, [roots[1]!], { findings: intact, repoBatch: { prefetchShare: 0.99 } });
    } finally {
      (pool as unknown as { query: typeof query }).query = query;
    }
    expect(intact.findings).toEqual([]);
    expect(sql.some((q) => q.includes('FROM blocks b') && q.includes('FROM records x WHERE x.cid = b.cid'))).toBe(true);
    expect(sql.filter((q) => /head_cid\s*(=|IN)/i.test(q))).toEqual([]);
    let perBlock = 0;
    (pool as unknown as { query: typeof query }).query = (...a: unknown[]) => {
      if (typeof a[0] === 'string' && a[0].includes('FROM records x WHERE x.cid = c.cid')) perBlock++;
      return query(...a);
    };
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = ANY($1::bytea[])', [mst]);
    try {
      const sink = new MemoryFindings();
      await runWalk({ pool, store }, { type: 'validate' }, [roots[1]!], { findings: sink, repoBatch: { prefetchShare: 0.99 } });
      const findings = sink.findings;
      expect(findings.length).toBeGreaterThan(0);
      for (const f of findings) expect([f.check, f.nodeType, mst.some((c) => cidString(c) === f.key), f.detail]).toEqual(['refcount', 'MstNode', true, 'refcount is 1, but 0 stored rows reference the block']);
      // The lookups' disagreements, counted again mirror-wide: every head counted, none names them.
      expect(perBlock).toBeGreaterThan(0);
    } finally {
      (pool as unknown as { query: typeof query }).query = query;
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = ANY($1::bytea[])', [mst]);
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
    const flipper = await bitFlipper(rec.cid);
    await flipper.flip();
    try {
      const { findings } = await validate();
      expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['block-hash', 'Record', cidString(rec.cid)]]);
      expect(findings[0]!.detail).toContain(flipper.packKey);
    } finally {
      await flipper.flip();
      await flipper.close();
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
    const did = testDids('mstfault', 1)[0]!;
    const broken = await importBrokenMst(did);
    const { findings, totals } = await validate({ roots: [{ type: 'Repo', did }] });
    expect(findings.map((f) => [f.check, f.nodeType, f.key])).toEqual([['mst', 'MstNode', broken.node]]);
    expect(findings[0]!.detail).toBe(`key of layer 0 is in a node of layer 1 (key ${JSON.stringify(broken.key)})`);
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
