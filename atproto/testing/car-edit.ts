/**
 * Faulty CARs for tests, made by editing good ones: a flipped byte, a dropped or an extra block,
 * a commit re-signed after a change (or signed by another key).
 *
 * The reading side is `@atcute/car`'s reader, which does not check hashes, so that the code
 * under test is never used to build its own fixtures.
 */
import { createHash } from 'node:crypto';
import * as CAR from '@atcute/car';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import type { Keypair } from '@atproto/crypto';

export interface CarBlocks {
  root: string;
  /** CID string → bytes, in CAR order. */
  blocks: Map<string, Uint8Array>;
}

/** The root and blocks of a CAR, unverified. */
export function readCarBlocks(car: Uint8Array): CarBlocks {
  const reader = CAR.fromUint8Array(car);
  const blocks = new Map<string, Uint8Array>();
  for (const entry of reader) blocks.set(CID.toString(entry.cid), entry.bytes);
  return { root: reader.roots[0]!.$link, blocks };
}

/** A CARv1 of `blocks` (written as given: CIDs are not recomputed) with one root. */
export function writeCar(root: string, blocks: Iterable<[string, Uint8Array]>): Uint8Array {
  const parts: Uint8Array[] = [];
  const header = CBOR.encode({ version: 1, roots: [CID.toCidLink(CID.fromString(root))] });
  parts.push(varint(header.length), header);
  for (const [cid, bytes] of blocks) {
    const cidBytes = CID.fromString(cid).bytes;
    parts.push(varint(cidBytes.length + bytes.length), cidBytes, bytes);
  }
  return Buffer.concat(parts);
}

/** CID string of DAG-CBOR (or raw) bytes. */
export function cidFor(bytes: Uint8Array, codec: 0x71 | 0x55 = 0x71): string {
  return CID.toString(CID.fromDigest(codec, createHash('sha256').update(bytes).digest()));
}

/** The CAR with one byte of block `cid` changed; its CID no longer matches. */
export function flipByte(car: Uint8Array, cid: string, at?: number): Uint8Array {
  const { root, blocks } = readCarBlocks(car);
  const bytes = blocks.get(cid);
  if (bytes === undefined) throw new Error(`no block ${cid} in the CAR`);
  const changed = Uint8Array.from(bytes);
  const i = at ?? changed.length >> 1;
  changed[i] = changed[i]! ^ 0x01;
  blocks.set(cid, changed);
  return writeCar(root, blocks);
}

/** The CAR without block `cid`. */
export function dropBlock(car: Uint8Array, cid: string): Uint8Array {
  const { root, blocks } = readCarBlocks(car);
  if (!blocks.delete(cid)) throw new Error(`no block ${cid} in the CAR`);
  return writeCar(root, blocks);
}

/** The CAR with extra blocks that nothing references. */
export function addBlocks(car: Uint8Array, extra: Uint8Array[]): Uint8Array {
  const { root, blocks } = readCarBlocks(car);
  for (const bytes of extra) blocks.set(cidFor(bytes), bytes);
  return writeCar(root, blocks);
}

/**
 * The CAR with its commit changed by `mutate` (fields as `@atcute/cbor` decodes them) and signed
 * again with `keypair`: pass the repo's own key to isolate the change, another to make only the
 * signature wrong. The new commit becomes the root.
 */
export async function resignCommit(car: Uint8Array, keypair: Keypair, mutate: (commit: Record<string, unknown>) => void = () => {}): Promise<Uint8Array> {
  const { root, blocks } = readCarBlocks(car);
  const { sig: _, ...unsigned } = CBOR.decode(blocks.get(root)!) as Record<string, unknown>;
  mutate(unsigned);
  const sig = await keypair.sign(CBOR.encode(unsigned));
  const commit = CBOR.encode({ ...unsigned, sig: CBOR.toBytes(sig) });
  blocks.delete(root);
  const commitCid = cidFor(commit);
  return writeCar(commitCid, [[commitCid, commit], ...blocks]);
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Uint8Array.from(out);
}
