/**
 * What the benches feed the code: repos under a DID the project's own check accepts, so a bench
 * runs the path a real backfill runs (a DID the check refuses would never reach the importer).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { Did } from '../backfill/settings.ts';
import { type MadeRepo, generateRecords, makeRepo, makeRepoCached, newKeypair } from '../atproto/testing/make-repo.ts';
import { cidFor, readCarBlocks, writeCar } from '../atproto/testing/car-edit.ts';

/** did:plc + 24 characters of base32 (a-z, 2-7), as PLC mints them. */
export const BENCH_DID = Did.parse('did:plc:repowalkbenchrepoaaaaaaa');

/** The signed `records`-record repo the verify and import benches share (cached on disk). */
export function benchRepo(records: number): Promise<MadeRepo> {
  return makeRepoCached({ did: BENCH_DID, records });
}

/** `manySmallRepos`: signed CARs, their DIDs, and the one key that signs them all. */
export interface SmallRepoSet {
  dids: string[];
  cars: Uint8Array[];
  signingKey: string;
}

const SMALL_SET_VERSION = 1;
const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

/**
 * `n` distinct signed repos of `records` records each, cached on disk keyed by `n`, `records` and
 * a version (`growth-v1-NxR.bin`: length-prefixed CARs; `.json`: DIDs and key). Making each with
 * the reference implementation costs ~50 ms (100,000 repos: over an hour); instead one repo is
 * made by it, and every other is that template with its own record content (`bench: i`), so its
 * own record CIDs, MST nodes re-encoded bottom up over them (the tree's shape follows the keys,
 * which are the same), and its own commit under its own DID, signed. `verifyRepo` checks each as
 * it checks any repo, so a wrong one would fail the import, not pass quietly.
 */
export async function manySmallRepos(n: number, records: number, log: (l: string) => void = () => {}): Promise<SmallRepoSet> {
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(homedir(), '.cache', 'repowalk'), 'test-repos');
  const file = join(dir, `growth-v${SMALL_SET_VERSION}-${n}x${records}.bin`);
  const meta = `${file}.json`;
  if (existsSync(file) && existsSync(meta)) {
    const buf = readFileSync(file);
    const cars: Uint8Array[] = [];
    for (let o = 0; o < buf.length; ) {
      const len = buf.readUInt32BE(o);
      cars.push(buf.subarray(o + 4, o + 4 + len));
      o += 4 + len;
    }
    const m = JSON.parse(readFileSync(meta, 'utf8')) as { dids: string[]; signingKey: string };
    if (m.dids.length !== n || cars.length !== n) throw new Error(`${file}: ${cars.length} CARs and ${m.dids.length} DIDs, expected ${n}; delete it to make it again`);
    return { ...m, cars };
  }
  log(`growth: making ${n} signed repos of ${records} records (once; cached in ${file})`);
  const keypair = await newKeypair();
  const inputs = generateRecords(records);
  const template = await makeRepo({ did: BENCH_DID, records: inputs.map((r) => ({ ...r, value: { ...r.value, bench: 'template' } })), keypair });
  const { root, blocks } = readCarBlocks(template.car);
  const recordIndex = new Map(template.records.map((r) => [r.cid, inputs.findIndex((x) => `${x.collection}/${x.rkey}` === r.path)]));
  const dids: string[] = [];
  const cars: Uint8Array[] = [];
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    let tail = '';
    for (let v = i; tail.length < 10; v = Math.floor(v / 32)) tail = B32[v % 32] + tail;
    const did = Did.parse(`did:plc:growth${'a'.repeat(8)}${tail}`);
    const out = new Map<string, Uint8Array>();
    const renamed = new Map<string, string>();
    for (const [oldCid, j] of recordIndex) {
      const bytes = CBOR.encode({ ...inputs[j]!.value, bench: `${i}` });
      const cid = cidFor(bytes);
      renamed.set(oldCid, cid);
      out.set(cid, bytes);
    }
    const link = (l: CBOR.CidLink | null | undefined) => (l == null ? null : toLink(renamed.get(l.$link) ?? l.$link));
    const rewriteNode = (cid: string): string => {
      const node = CBOR.decode(blocks.get(cid)!) as { l: CBOR.CidLink | null; e: { p: number; k: CBOR.Bytes; v: CBOR.CidLink; t: CBOR.CidLink | null }[] };
      if (node.l) rewriteNode(node.l.$link);
      for (const e of node.e) if (e.t) rewriteNode(e.t.$link);
      const bytes = CBOR.encode({ e: node.e.map((e) => ({ k: e.k, p: e.p, t: link(e.t), v: link(e.v)! })), l: link(node.l) });
      const next = cidFor(bytes);
      renamed.set(cid, next);
      out.set(next, bytes);
      return next;
    };
    const { sig: _, ...unsigned } = CBOR.decode(blocks.get(root)!) as { data: CBOR.CidLink; sig: CBOR.Bytes };
    const commit = { ...unsigned, did, data: toLink(rewriteNode(unsigned.data.$link)) };
    const sig = await keypair.sign(CBOR.encode(commit));
    const commitBytes = CBOR.encode({ ...commit, sig: CBOR.toBytes(sig) });
    const commitCid = cidFor(commitBytes);
    dids.push(did);
    cars.push(writeCar(commitCid, [[commitCid, commitBytes], ...out]));
    if (i % 10_000 === 9_999) log(`growth: made ${i + 1} of ${n} repos (${Math.round((i + 1) / ((performance.now() - started) / 1000))}/s)`);
  }
  mkdirSync(dir, { recursive: true });
  const parts: Uint8Array[] = [];
  for (const car of cars) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(car.length);
    parts.push(len, car);
  }
  // Write then rename, so an interrupted run never leaves half a file that a later one reads.
  writeFileSync(`${file}.tmp`, Buffer.concat(parts));
  writeFileSync(`${meta}.tmp`, JSON.stringify({ dids, signingKey: keypair.did() }));
  renameSync(`${file}.tmp`, file);
  renameSync(`${meta}.tmp`, meta);
  return { dids, cars, signingKey: keypair.did() };
}

/** The DIDs of `manySmallRepos(n, records)` without reading its CARs (made first if need be). */
export async function manySmallRepoDids(n: number, records: number, log: (l: string) => void = () => {}): Promise<string[]> {
  const meta = join(process.env.REPOWALK_CACHE_DIR ?? join(homedir(), '.cache', 'repowalk'), 'test-repos', `growth-v${SMALL_SET_VERSION}-${n}x${records}.bin.json`);
  if (!existsSync(meta)) return (await manySmallRepos(n, records, log)).dids;
  return (JSON.parse(readFileSync(meta, 'utf8')) as { dids: string[] }).dids;
}

function toLink(cid: string): CBOR.CidLink {
  return CID.toCidLink(CID.fromString(cid));
}
