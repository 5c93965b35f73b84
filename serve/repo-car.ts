/**
 * CARs assembled from packs: a whole repo (`getRepo`), streamed in chunks as its tree is read
 * layer by layer, and the proof of one record (`sync.getRecord`): the commit, the MST nodes on
 * the path to the key, and the record when it exists.
 *
 * Blocks go out as the PDS sends them: the commit first, then the tree; readers
 * (`verifyRepoCar`, `@atcute/repo`) take blocks in any order. Every block is checked against its
 * CID by the reader before it is written.
 */
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { latin1 } from '../atproto/cid.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, PREFIX, RIGHT, VALUE, decodeMstNode } from '../atproto/mst-node.ts';
import { MAX_PATH_LENGTH } from '../atproto/mst.ts';
import { cidMapKey } from '../graph/blocks.ts';
import type { PackBlockReader } from './blocks.ts';
import { BlockMap } from '../atproto/block-map.ts';
import { varintLength, writeVarint } from '../storage/packs.ts';

const CHUNK = 1024 * 1024;
const RECORD_BATCH = 20_000;

/** The CARv1 header naming `root`. */
export function carHeader(root: Uint8Array): Uint8Array {
  const header = CBOR.encode({ version: 1, roots: [new CidLinkWrapper(root)] });
  return frame(header.length, [header]);
}

function frame(length: number, parts: Uint8Array[]): Uint8Array {
  const out = Buffer.allocUnsafe(varintLength(length) + length);
  let pos = writeVarint(out, 0, length);
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Gathers CAR entries into chunks of about `CHUNK` bytes. */
class ChunkBuilder {
  #buf = Buffer.allocUnsafe(CHUNK);
  #pos = 0;
  readonly #full: Uint8Array[] = [];

  push(bytes: Uint8Array): void {
    if (this.#pos + bytes.length > this.#buf.length) this.#flush(bytes.length);
    this.#buf.set(bytes, this.#pos);
    this.#pos += bytes.length;
  }

  block(cid: Uint8Array, data: Uint8Array): void {
    const len = cid.length + data.length;
    const need = varintLength(len) + len;
    if (this.#pos + need > this.#buf.length) this.#flush(need);
    this.#pos = writeVarint(this.#buf, this.#pos, len);
    this.#buf.set(cid, this.#pos);
    this.#buf.set(data, this.#pos + cid.length);
    this.#pos += len;
  }

  #flush(need: number): void {
    if (this.#pos > 0) this.#full.push(this.#buf.subarray(0, this.#pos));
    this.#buf = Buffer.allocUnsafe(Math.max(CHUNK, need));
    this.#pos = 0;
  }

  /** Chunks completed so far; with `all`, the partial one too. */
  take(all = false): Uint8Array[] {
    if (all) this.#flush(0);
    return this.#full.splice(0);
  }
}

export interface RepoCarInput {
  head: Uint8Array;
  dataRoot: Uint8Array;
  /**
   * Only these record CIDs (`since`): the commit and the whole tree go out regardless, the
   * records only when listed. Undefined sends every record.
   */
  records?: Set<string>;
}

/**
 * The repo as a CAR, in chunks of about 1 MiB: the caller writes each before asking for the
 * next, so memory holds one tree layer (or one batch of records) and one chunk, plus the packs
 * the reader holds.
 *
 * @throws {MissingBlockError} when a block the tree names cannot be read.
 */
export async function* repoCar(reader: PackBlockReader, input: RepoCarInput): AsyncGenerator<Uint8Array> {
  const out = new ChunkBuilder();
  out.push(carHeader(input.head));
  const [commit] = await reader.getMany([input.head]);
  out.block(input.head, commit!);
  let layer: Uint8Array[] = [input.dataRoot];
  // One entry array for every node: each is read before the next is decoded.
  const scratch = new Int32Array(256 * ENTRY_FIELDS);
  let records: Uint8Array[] = [];
  // A set of CIDs: the block map with empty data (no string per record).
  const seenRecords = new BlockMap();
  while (layer.length > 0) {
    const nodes = await reader.getMany(layer);
    const next: Uint8Array[] = [];
    for (let n = 0; n < nodes.length; n++) {
      const bytes = nodes[n]!;
      out.block(layer[n]!, bytes);
      const node = decodeMstNode(bytes, scratch);
      if (node.left >= 0) next.push(bytes.subarray(node.left, node.left + 36));
      for (let i = 0; i < node.count; i++) {
        const at = i * ENTRY_FIELDS;
        const value = bytes.subarray(node.entries[at + VALUE]!, node.entries[at + VALUE]! + 36);
        // The same record block under two keys is sent once, as a CAR holds each block once.
        if ((!input.records || input.records.has(cidMapKey(value))) && seenRecords.add(value, 0, 36)) records.push(value);
        const right = node.entries[at + RIGHT]!;
        if (right >= 0) next.push(bytes.subarray(right, right + 36));
      }
    }
    for (const c of out.take()) yield c;
    layer = next;
    while (records.length >= RECORD_BATCH) {
      yield* emitRecords(reader, out, records.splice(0, RECORD_BATCH));
    }
  }
  while (records.length > 0) yield* emitRecords(reader, out, records.splice(0, RECORD_BATCH));
  for (const c of out.take(true)) yield c;
}

async function* emitRecords(reader: PackBlockReader, out: ChunkBuilder, cids: Uint8Array[]): AsyncGenerator<Uint8Array> {
  const blocks = await reader.getMany(cids);
  for (let i = 0; i < cids.length; i++) out.block(cids[i]!, blocks[i]!);
  for (const c of out.take()) yield c;
}

export interface RecordProof {
  /** The CAR: commit, path nodes, and the record when found. */
  car: Uint8Array;
  /** The record's CID and bytes, when the tree holds the key. */
  record?: { cid: Uint8Array; bytes: Uint8Array };
}

/**
 * Walks from the data root to `path` (`collection/rkey`), collecting the nodes on the way: the
 * proof that the record is in the tree, or that it is not.
 */
export async function recordProof(reader: PackBlockReader, head: Uint8Array, dataRoot: Uint8Array, path: string): Promise<RecordProof> {
  const out = new ChunkBuilder();
  out.push(carHeader(head));
  const [commit] = await reader.getMany([head]);
  out.block(head, commit!);
  const keyBuf = new Uint8Array(MAX_PATH_LENGTH);
  let cid: Uint8Array | null = dataRoot;
  let found: RecordProof['record'];
  while (cid) {
    const [bytes] = await reader.getMany([cid]);
    out.block(cid, bytes!);
    const node = decodeMstNode(bytes!);
    let next: Uint8Array | null = node.left >= 0 ? bytes!.subarray(node.left, node.left + 36) : null;
    let keyLength = 0;
    cid = null;
    let descended = false;
    for (let i = 0; i < node.count; i++) {
      const at = i * ENTRY_FIELDS;
      const prefix = node.entries[at + PREFIX]!;
      const rest = bytes!.subarray(node.entries[at + KEY_START]!, node.entries[at + KEY_END]!);
      keyBuf.set(rest, prefix);
      keyLength = prefix + rest.length;
      const key = latin1(keyBuf, 0, keyLength);
      if (key === path) {
        const value = bytes!.subarray(node.entries[at + VALUE]!, node.entries[at + VALUE]! + 36);
        const [record] = await reader.getMany([value]);
        found = { cid: value, bytes: record! };
        out.block(value, record!);
        descended = true;
        break;
      }
      if (key > path) {
        cid = next;
        descended = true;
        break;
      }
      const right = node.entries[at + RIGHT]!;
      next = right >= 0 ? bytes!.subarray(right, right + 36) : null;
    }
    if (!descended) cid = next;
  }
  const chunks = out.take(true);
  return { car: Buffer.concat(chunks), ...(found ? { record: found } : {}) };
}
