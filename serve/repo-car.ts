/**
 * CARs assembled from packs: a whole repo (`getRepo`), its tree walked and then its blocks
 * streamed as views of the packs they sit in, and the proof of one record (`sync.getRecord`): the commit, the MST nodes on
 * the path to the key, and the record when it exists.
 *
 * The commit goes out first, as the PDS sends it; the other blocks in pack order, which readers
 * (`verifyRepoCar`, `@atcute/repo`) take as they take a PDS's (in any order). Every block is
 * checked by the reader (a pack against its key, a range against its CID) before it is written.
 */
import { crc32 } from 'node:zlib';
import { latin1 } from '../atproto/cid.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, PREFIX, RIGHT, VALUE, decodeMstNode } from '../atproto/mst-node.ts';
import { MAX_PATH_LENGTH } from '../atproto/mst.ts';
import { cidMapKey } from '../graph/blocks.ts';
import { MissingBlockError, type PackBlockReader } from './blocks.ts';
import type { CarPlanStore } from './car-plan-store.ts';
import { RANGE_MAX, carHeader, type PackRange, type StoredPiece, type StoredPlan } from '../storage/car-plans.ts';
import { varintLength, writeVarint } from '../storage/packs.ts';
import { BufferPool, lend } from './lent.ts';

const CHUNK = 1024 * 1024;

export { carHeader };

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

  /** True when a chunk is complete. */
  get ready(): boolean {
    return this.#full.length > 0;
  }

  /** Chunks completed so far; with `all`, the partial one too. */
  take(all = false): Uint8Array[] {
    if (all && this.#pos > 0) {
      if (this.#pos >= CHUNK / 4) {
        this.#flush(0);
      } else {
        // A small tail is copied out, and the buffer kept for what comes next.
        this.#full.push(Buffer.from(this.#buf.subarray(0, this.#pos)));
        this.#pos = 0;
      }
    }
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

// Per block of the reader's map: sent, and (for MST nodes) walked.
const SEND = 1;
const WALKED = 2;
/**
 * The most pack bytes one view handed to the socket covers; also one ranged read (and one CRC)
 * of a stored plan, so a cold request reads the next range while the socket sends this one.
 */
const RUN_MAX = RANGE_MAX;
/**
 * Read buffers of cold requests, shared by the server's requests: a range is read into one,
 * checked, lent to the socket, and the buffer taken again once the socket has written it. A
 * request holds at most three (two reads ahead, one being sent), so a few requests at once need
 * no allocation, and a 31 MB CAR costs no 31 MB of fresh buffers (whose collection cost more
 * than the read).
 */
const readBuffers = new BufferPool(RANGE_MAX, 6);

/** Limits of a plan remembered or stored when the server keeps none in memory. */
const MAX_PIECES = 4096;
const MAX_OWN_BYTES = 1024 * 1024;

/** Where a server keeps the plans of the CARs it sent, for servers that never sent them. */
export interface StoredCarPlans {
  plans: CarPlanStore;
  /** The repo whose CAR this is. */
  did: string;
}

/**
 * The repo as a CAR. The tree is walked first, marking which of the blocks the reader holds
 * are reachable (MST nodes decoded once, in place; records looked up by the CID bytes inside
 * the node, no object per record); then the marked blocks go out in the order they sit in
 * their packs, a run of neighbours as one view of the pack bytes (a pack is framed as a CAR
 * is), so a repo stored by one import is sent as a few views of its pack. A pack may hold
 * other repos' blocks (a batched store) or blocks the head no longer reaches: those are
 * skipped. Blocks read by range are copied into chunks. Every block was checked by the
 * reader (a pack against its key, a range against its CID) before the walk looks at it.
 *
 * Memory: the packs the reader holds (as before), one byte per block held, and the chunks.
 *
 * @throws {MissingBlockError} when a block the tree names cannot be read.
 */
export async function* repoCar(reader: PackBlockReader, input: RepoCarInput, plans?: RepoCarPlans, stored?: StoredCarPlans): AsyncGenerator<Uint8Array> {
  const planKey = (plans || stored) && !input.records ? cidMapKey(input.head) : undefined;
  if (planKey !== undefined && plans) {
    const remembered = plans.get(planKey);
    if (remembered && remembered.every((p) => 'bytes' in p || p.crc !== undefined) && !remembered.every((p) => 'bytes' in p || reader.heldRange(p.key, p.start, p.end))) {
      // Asked again on this server, its ranges not held: read, checked, and kept this time.
      if (yield* fromStored(reader, toStored(remembered), input.head, stored, plans, planKey, true)) return;
      plans.delete(planKey);
    } else if (remembered) {
      const planned = await fromPlan(reader, plans, planKey);
      if (planned) {
        yield* planned;
        return;
      }
    }
  }
  if (planKey !== undefined && stored) {
    const plan = await stored.plans.load(stored.did, input.head);
    if (plan && (yield* fromStored(reader, plan, input.head, stored, plans, planKey, false))) return;
  }
  const maxOwnBytes = plans?.maxOwnBytes ?? MAX_OWN_BYTES;
  const maxPieces = plans?.maxPieces ?? MAX_PIECES;
  // What this CAR is made of, for the next request of the same head; dropped when too big.
  let pieces: Piece[] | undefined = planKey !== undefined ? [] : undefined;
  let ownBytes = 0;
  const own = (c: Uint8Array) => {
    if (!pieces) return;
    ownBytes += c.length;
    if (ownBytes > maxOwnBytes || pieces.length >= maxPieces) pieces = undefined;
    else pieces.push({ bytes: c });
  };
  const run = (buffer: Uint8Array, start: number, end: number) => {
    const key = reader.packKeyOf(buffer);
    if (!pieces) return;
    if (key === undefined || pieces.length >= maxPieces) pieces = undefined;
    else pieces.push(stored ? { key, start, end, crc: crc32(buffer.subarray(start, end)) } : { key, start, end });
  };
  // Taken again after each resolve: the reader may have swapped in a map of its own.
  let map = reader.blocks;
  let marks = new Uint8Array(1024);
  const room = () => {
    if (marks.length < map.size) {
      const next = new Uint8Array(Math.max(map.size, marks.length * 2));
      next.set(marks);
      marks = next;
    }
  };
  const [headAt] = await reader.resolve([input.head]);
  map = reader.blocks;
  room();
  // One entry array for every node: each is read before the next is decoded.
  const scratch = new Int32Array(256 * ENTRY_FIELDS);
  // Nodes and records the held packs do not have: located and read a batch at a time.
  let nodesToRead: Uint8Array[] = [input.dataRoot];
  let recordsToRead: Uint8Array[] = [];
  const stack: number[] = [];
  const reach = (bytes: Uint8Array, at: number) => {
    const j = map.indexOf(bytes, at);
    if (j < 0) return nodesToRead.push(bytes.subarray(at, at + 36));
    if ((marks[j]! & WALKED) === 0) {
      marks[j] = SEND | WALKED;
      stack.push(j);
    }
  };
  const wanted = input.records;
  let next = 0;
  while (nodesToRead.length > 0 || recordsToRead.length > 0) {
    if (nodesToRead.length > 0) {
      const found = await reader.resolve(nodesToRead);
      map = reader.blocks;
      nodesToRead = [];
      room();
      for (const j of found) {
        if ((marks[j]! & WALKED) !== 0) continue;
        marks[j] = SEND | WALKED;
        stack.push(j);
      }
    }
    if (recordsToRead.length > 0) {
      const found = await reader.resolve(recordsToRead);
      map = reader.blocks;
      recordsToRead = [];
      room();
      for (const j of found) marks[j]! |= SEND;
    }
    while (stack.length > 0) {
      const n = stack.pop()!;
      const bytes = map.dataAt(n);
      const node = decodeMstNode(bytes, scratch);
      if (node.left >= 0) reach(bytes, node.left);
      for (let i = 0; i < node.count; i++) {
        const at = i * ENTRY_FIELDS;
        const value = node.entries[at + VALUE]!;
        if (wanted === undefined || wanted.has(cidMapKey(bytes.subarray(value, value + 36)))) {
          // A pack often holds a node's records side by side, in key order: the block after
          // the last one found is tried before the index (one compare, mostly failing on the
          // first digest byte when it is not the one).
          const j = next < map.size && map.isAt(next, bytes, value) ? next : map.indexOf(bytes, value);
          next = j + 1;
          if (j >= 0) marks[j]! |= SEND;
          else recordsToRead.push(bytes.subarray(value, value + 36));
        }
        const right = node.entries[at + RIGHT]!;
        if (right >= 0) reach(bytes, right);
      }
    }
  }

  // The commit first, as a PDS sends it; then every other marked block in pack order.
  const out = new ChunkBuilder();
  out.push(carHeader(input.head));
  out.block(input.head, map.dataAt(headAt!));
  marks[headAt!] = 0;
  let runBuffer: Uint8Array | undefined;
  let runStart = 0;
  let runEnd = 0;
  for (let i = 0; i < map.size; i++) {
    if ((marks[i]! & SEND) === 0) continue;
    const buffer = map.bufferAt(i);
    const start = map.startAt(i);
    const end = map.endAt(i);
    if (!reader.isPack(buffer)) {
      out.block(map.cidAt(i), map.dataAt(i));
      if (out.ready) {
        for (const c of out.take()) {
          own(c);
          yield c;
        }
      }
      continue;
    }
    const frameStart = start - varintLength(end - start);
    if (buffer === runBuffer && frameStart === runEnd && end - runStart <= RUN_MAX) {
      runEnd = end;
      continue;
    }
    if (runBuffer) {
      for (const c of out.take(true)) {
        own(c);
        yield c;
      }
      run(runBuffer, runStart, runEnd);
      yield runBuffer.subarray(runStart, runEnd);
    }
    runBuffer = buffer;
    runStart = frameStart;
    runEnd = end;
  }
  for (const c of out.take(true)) {
    own(c);
    yield c;
  }
  if (runBuffer) {
    run(runBuffer, runStart, runEnd);
    yield runBuffer.subarray(runStart, runEnd);
  }
  if (pieces) {
    plans?.set(planKey!, pieces);
    if (stored) await stored.plans.save(stored.did, input.head, toStored(pieces));
  }
}

/** A walked CAR's pieces as a stored plan (every range has its CRC when a store is given). */
function toStored(pieces: Piece[]): StoredPlan {
  const packKeys: string[] = [];
  const ordinal = new Map<string, number>();
  const out: StoredPiece[] = pieces.map((p) => {
    if ('bytes' in p) return { bytes: p.bytes };
    let pack = ordinal.get(p.key);
    if (pack === undefined) {
      pack = packKeys.push(p.key) - 1;
      ordinal.set(p.key, pack);
    }
    return { pack, start: p.start, end: p.end, crc: p.crc! };
  });
  return { packKeys, pieces: out };
}

/**
 * The CAR from a stored plan: each range read by one ranged get (the next one already asked
 * for while this one is sent) and checked against its CRC before any of it is sent. Without
 * `keep` (a head this server has not sent) each range is read into a pooled buffer and lent to
 * the socket (see {@link readBuffers}); with it, into a buffer of its own kept in the pack
 * cache, so the head's next requests read nothing. False,
 * having sent nothing, when the first range cannot be read or does not check: the caller walks
 * instead (and reports what is wrong). A later range that fails ends the response with an error
 * (the client sees a truncated CAR, never a wrong byte). Either way the plan is dropped. Ranges
 * read are kept in the reader's pack cache and the plan in `plans`, so the next request of this
 * server reads nothing.
 */
async function* fromStored(reader: PackBlockReader, plan: StoredPlan, head: Uint8Array, stored: StoredCarPlans | undefined, plans: RepoCarPlans | undefined, planKey: string, keep: boolean): AsyncGenerator<Uint8Array, boolean> {
  const { pieces, packKeys } = plan;
  const ranges: number[] = [];
  for (const [i, p] of pieces.entries()) if ('pack' in p) ranges.push(i);
  const reads = new Map<number, Promise<Uint8Array | null>>();
  let asked = 0;
  const read = async (p: PackRange): Promise<Uint8Array | null> => {
    const key = packKeys[p.pack]!;
    if (!keep) {
      const held = reader.heldRange(key, p.start, p.end);
      if (held) return held;
      const buffer = readBuffers.take(p.end - p.start);
      const view = buffer.subarray(0, p.end - p.start);
      if (!(await reader.readRangeInto(key, p.start, view)) || crc32(view) !== p.crc) {
        readBuffers.give(buffer);
        return null;
      }
      return lend(view, () => readBuffers.give(buffer));
    }
    const got = await reader.readRange(key, p.start, p.end);
    if (!got) return null;
    if (got.checked) return got.bytes;
    if (got.bytes.length !== p.end - p.start || crc32(got.bytes) !== p.crc) return null;
    reader.keepRange(key, p.start, got.bytes);
    return got.bytes;
  };
  const ahead = () => {
    while (asked < ranges.length && reads.size < 2) {
      const i = ranges[asked++]!;
      reads.set(i, read(pieces[i] as PackRange));
    }
  };
  ahead();
  const remembered: Piece[] = [];
  let waiting: Uint8Array[] = [];
  let sent = false;
  for (const [i, p] of pieces.entries()) {
    if ('bytes' in p) {
      waiting.push(p.bytes);
      remembered.push({ bytes: p.bytes });
      continue;
    }
    const bytes = await reads.get(i)!;
    reads.delete(i);
    if (!bytes) {
      if (stored) await stored.plans.drop(stored.did, head);
      plans?.delete(planKey);
      if (!sent) return false;
      throw new MissingBlockError(`bytes ${p.start}-${p.end} of pack ${packKeys[p.pack]} (in the CAR plan of ${stored?.did ?? 'this head'}) cannot be read or do not match their CRC`);
    }
    ahead();
    for (const c of waiting) yield c;
    waiting = [];
    sent = true;
    yield bytes;
    remembered.push({ key: packKeys[p.pack]!, start: p.start, end: p.end, crc: p.crc });
  }
  for (const c of waiting) yield c;
  plans?.set(planKey, remembered);
  return true;
}

/** A piece of a remembered CAR: a range of a pack's bytes (with its CRC-32 when known), or bytes of its own. */
type Piece = { key: string; start: number; end: number; crc?: number } | { bytes: Uint8Array };

/**
 * What the CAR of a head is made of, remembered per head (LRU): the header and commit, and the
 * ranges of pack bytes that followed. A head is content-addressed, so what it reaches never
 * changes, and a pack's key is its hash, so its bytes never change either: the next getRepo of
 * the same head reads the packs, checks each against its key, and sends the ranges, with no
 * walk. A pack gone or damaged sends the request down the full path, which reports it.
 */
export class RepoCarPlans {
  readonly #plans = new Map<string, Piece[]>();
  #ownBytes = 0;
  readonly maxPlans: number;
  readonly maxPieces: number;
  readonly maxOwnBytes: number;

  /** Bytes of their own all plans may hold (copies of blocks read by range, headers). */
  readonly budgetBytes: number;

  constructor(opts: { maxPlans?: number; maxPieces?: number; maxOwnBytes?: number; budgetBytes?: number } = {}) {
    this.maxPlans = opts.maxPlans ?? 256;
    this.maxPieces = opts.maxPieces ?? 4096;
    this.maxOwnBytes = opts.maxOwnBytes ?? 1024 * 1024;
    this.budgetBytes = opts.budgetBytes ?? 16 * 1024 * 1024;
  }

  get size(): number {
    return this.#plans.size;
  }

  /** @internal */
  get(head: string): Piece[] | undefined {
    const plan = this.#plans.get(head);
    if (plan) {
      this.#plans.delete(head);
      this.#plans.set(head, plan);
    }
    return plan;
  }

  /** @internal */
  set(head: string, pieces: Piece[]): void {
    this.delete(head);
    this.#plans.set(head, pieces);
    this.#ownBytes += ownBytesOf(pieces);
    for (const k of this.#plans.keys()) {
      if (this.#plans.size <= this.maxPlans && this.#ownBytes <= this.budgetBytes) break;
      this.delete(k);
    }
  }

  /** @internal */
  delete(head: string): void {
    const plan = this.#plans.get(head);
    if (!plan) return;
    this.#plans.delete(head);
    this.#ownBytes -= ownBytesOf(plan);
  }
}

function ownBytesOf(pieces: Piece[]): number {
  let n = 0;
  for (const p of pieces) if ('bytes' in p) n += p.bytes.length;
  return n;
}

/** The remembered CAR's chunks, once every pack it names has been read and checked; else null. */
async function fromPlan(reader: PackBlockReader, plans: RepoCarPlans, head: string): Promise<Uint8Array[] | null> {
  const plan = plans.get(head);
  if (!plan) return null;
  const packs = new Map<string, Uint8Array | null>();
  for (const p of plan) if ('key' in p && !packs.has(p.key) && !reader.heldRange(p.key, p.start, p.end)) packs.set(p.key, await reader.wholePack(p.key));
  const out: Uint8Array[] = [];
  for (const p of plan) {
    if ('bytes' in p) {
      out.push(p.bytes);
      continue;
    }
    const held = reader.heldRange(p.key, p.start, p.end);
    if (held) {
      out.push(held);
      continue;
    }
    const pack = packs.get(p.key);
    if (!pack || p.end > pack.length) {
      plans.delete(head);
      return null;
    }
    out.push(pack.subarray(p.start, p.end));
  }
  return out;
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
