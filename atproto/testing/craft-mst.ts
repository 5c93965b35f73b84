/**
 * Hand-made MSTs for the faults a correct implementation never writes: keys out of order, a key
 * on the wrong layer, an invalid path, a short prefix, an empty node. A tree is given node by
 * node; everything not given is filled in the canonical way, and the commit is signed for real,
 * so a test of one fault fails on that fault alone.
 *
 * `canonicalTree` lays keys out the way the reference implementation does (layers from
 * `@atproto/repo`'s own hash helper); a test checks that crafting it gives the reference's
 * data CID, which is what makes crafted trees trustworthy fixtures.
 */
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { mstUtil } from '@atproto/repo';
import { cidFor, writeCar } from './car-edit.ts';
import { DEFAULT_DID, type MadeRecord, type TestKeypair } from './make-repo.ts';

export interface NodeSpec {
  left?: NodeSpec | null;
  entries: EntrySpec[];
}

export interface EntrySpec {
  key: string;
  right?: NodeSpec | null;
  /** Prefix length to write instead of the longest shared one. */
  prefix?: number;
  /** Record CID to write instead of the crafted record's. */
  value?: string;
}

export interface CraftedRepo {
  car: Uint8Array;
  did: string;
  signingKey: string;
  commitCid: string;
  dataCid: string;
  /** CIDs of the MST nodes, root first. */
  nodes: string[];
  /** In the order the tree holds them. */
  records: MadeRecord[];
}

export interface CraftOptions {
  did?: string;
  keypair: TestKeypair;
  tree: NodeSpec;
  rev?: string;
  /** Leave these blocks (node or record CIDs) out of the CAR. */
  omit?: (cid: string) => boolean;
}

/** The record crafted for `path`: small, and distinct per path. */
export function craftedRecordValue(path: string): Record<string, unknown> {
  return { $type: path.slice(0, path.indexOf('/')), path };
}

/** A signed repository whose MST is exactly `tree`. */
export async function craftRepo(options: CraftOptions): Promise<CraftedRepo> {
  const did = options.did ?? DEFAULT_DID;
  const blocks = new Map<string, Uint8Array>();
  const nodes: string[] = [];
  const records: MadeRecord[] = [];

  const encodeNode = (spec: NodeSpec): string => {
    const index = nodes.length;
    nodes.push('');
    const left = spec.left ? link(encodeNode(spec.left)) : null;
    const entries = [];
    let prev = new Uint8Array();
    for (const entry of spec.entries) {
      const key = new TextEncoder().encode(entry.key);
      const prefix = entry.prefix ?? sharedPrefix(prev, key);
      const record = CBOR.encode(craftedRecordValue(entry.key));
      const cid = entry.value ?? cidFor(record);
      blocks.set(cidFor(record), record);
      const slash = entry.key.indexOf('/');
      records.push({ collection: entry.key.slice(0, slash), rkey: entry.key.slice(slash + 1), cid, path: entry.key });
      const right = entry.right ? link(encodeNode(entry.right)) : null;
      entries.push({ k: CBOR.toBytes(key.subarray(prefix)), p: prefix, t: right, v: link(cid) });
      prev = key;
    }
    const bytes = CBOR.encode({ e: entries, l: left });
    const cid = cidFor(bytes);
    blocks.set(cid, bytes);
    nodes[index] = cid;
    return cid;
  };
  const dataCid = encodeNode(options.tree);

  const unsigned = { did, version: 3, data: link(dataCid), rev: options.rev ?? '3jzfcijpj2z2a', prev: null };
  const sig = await options.keypair.sign(CBOR.encode(unsigned));
  const commit = CBOR.encode({ ...unsigned, sig: CBOR.toBytes(sig) });
  const commitCid = cidFor(commit);
  const omit = options.omit ?? (() => false);
  const kept: [string, Uint8Array][] = [[commitCid, commit], ...[...blocks].filter(([cid]) => !omit(cid))];
  return { car: writeCar(commitCid, kept), did, signingKey: options.keypair.did(), commitCid, dataCid, nodes, records };
}

/** The canonical tree of `keys`, as the reference implementation lays it out. */
export async function canonicalTree(keys: string[]): Promise<NodeSpec> {
  const sorted = [...new Set(keys)].sort();
  if (sorted.length === 0) return { left: null, entries: [] };
  const items = await Promise.all(sorted.map(async (key) => ({ key, layer: await mstUtil.leadingZerosOnHash(key) })));
  return build(items, Math.max(...items.map((i) => i.layer)));
}

/** MST layer of `key` by the reference implementation. */
export function referenceLayer(key: string): Promise<number> {
  return mstUtil.leadingZerosOnHash(key);
}

function build(items: { key: string; layer: number }[], height: number): NodeSpec {
  const node: NodeSpec = { left: null, entries: [] };
  let run: typeof items = [];
  const attach = () => {
    const subtree = run.length > 0 ? build(run, height - 1) : null;
    const last = node.entries[node.entries.length - 1];
    if (last === undefined) node.left = subtree;
    else last.right = subtree;
    run = [];
  };
  for (const item of items) {
    if (item.layer === height) {
      attach();
      node.entries.push({ key: item.key });
    } else {
      run.push(item);
    }
  }
  attach();
  return node;
}

function link(cid: string): CID.CidLink {
  return CID.toCidLink(CID.fromString(cid));
}

function sharedPrefix(a: Uint8Array, b: Uint8Array): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
