/**
 * Import and validate never disagree on what a valid MST is: the same crafted trees go through
 * import's verifier (which throws on the first problem) and, stored as if verified, through the
 * validate walk's `mst` check (which records every problem of every node). Where import refuses,
 * validate reports the same problem on the same node; where import accepts, validate is silent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import { importRepo } from '../../backfill/import.ts';
import { readCar } from '../../atproto/car.ts';
import { MstError } from '../../atproto/errors.ts';
import { verifyRepo, type VerifiedRepo } from '../../atproto/verify.ts';
import { newKeypair, type TestKeypair } from '../../atproto/testing/make-repo.ts';
import { type NodeSpec, canonicalTree, craftRepo } from '../../atproto/testing/craft-mst.ts';
import { keysOfLayer } from '../../atproto/testing/keys.ts';
import { type MstFault, mstFaults } from '../../atproto/testing/mst-faults.ts';
import { MemoryFindings, type Finding } from '../findings.ts';
import { runWalk } from '../run.ts';
import { testDids } from '../../test/mirror.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
let keypair: TestKeypair;
let faults: MstFault[];
const dids = testDids('mstagree', 20);

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_mst_agree'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-mst-agree-'));
  store = new LocalBlobStore(dir);
  keypair = await newKeypair();
  faults = await mstFaults();
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** What import says of `tree` (undefined: accepted), and the validate walk's `mst` findings once it is stored unverified. */
async function judge(did: string, tree: NodeSpec): Promise<{ imported: unknown; findings: Finding[] }> {
  const crafted = await craftRepo({ did, keypair, tree });
  const imported = await verifyRepo(crafted.car, { did, signingKey: crafted.signingKey }).then(
    () => undefined,
    (e: unknown) => e,
  );
  const repo: VerifiedRepo = {
    did,
    version: 3,
    rev: '3jzfcijpj2z2a',
    commitCid: crafted.commitCid,
    dataCid: crafted.dataCid,
    blocks: readCar(crafted.car).blocks,
    // A tree can hold a key twice; the record index cannot.
    records: crafted.records.filter((r, i, all) => all.findIndex((o) => o.path === r.path) === i),
    mstNodes: crafted.nodes,
    mstHeight: 0,
    carBytes: crafted.car.length,
    unreachableBlocks: 0,
  };
  await importRepo({ pool, blobs: store }, { repo, pds: 'https://pds.invalid', handle: undefined, signingKey: crafted.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
  const findings = new MemoryFindings();
  await runWalk({ pool, store }, { type: 'validate', validate: { checks: ['mst'] } }, [{ type: 'Repo', did }], { findings });
  return { imported, findings: findings.findings };
}

describe('import and validate agree on the MST', () => {
  it('on a canonical tree of three layers: both accept', async () => {
    const keys = (await Promise.all([keysOfLayer(0, 5), keysOfLayer(1, 2), keysOfLayer(2, 1)])).flat();
    const { imported, findings } = await judge(dids[0]!, await canonicalTree(keys));
    expect(imported).toBeUndefined();
    expect(findings).toEqual([]);
  });

  it('on every crafted fault: import refuses it, and validate reports that problem on that node', async () => {
    expect(faults.length).toBeGreaterThanOrEqual(12);
    for (const [i, fault] of faults.entries()) {
      const { imported, findings } = await judge(dids[i + 1]!, fault.tree);
      expect(imported, fault.name).toBeInstanceOf(MstError);
      const error = imported as MstError;
      expect(error.code, fault.name).toBe(fault.code);
      expect(findings.length, fault.name).toBeGreaterThan(0);
      for (const f of findings) expect([f.check, f.nodeType], fault.name).toEqual(['mst', 'MstNode']);
      const atNode = findings.find((f) => f.key === error.cid);
      expect(atNode, `${fault.name}: a finding on ${error.cid}`).toBeDefined();
      // MstError's message is `mst node <cid>: <problem>`; validate lists every problem of the node.
      const problem = error.message.slice(`mst node ${error.cid}: `.length);
      expect(atNode!.detail.split('; '), fault.name).toContain(problem);
    }
  });

  it('validate records every problem of a node, import the first of them', async () => {
    const fault = faults.find((f) => f.name.startsWith('two faults'))!;
    const { imported, findings } = await judge(dids[19]!, fault.tree);
    const problems = findings[0]!.detail.split('; ');
    expect(problems.length).toBeGreaterThanOrEqual(2);
    expect(problems.some((p) => p.includes('not a valid collection/rkey path'))).toBe(true);
    expect((imported as MstError).message).toContain(problems[0]);
  });
});
