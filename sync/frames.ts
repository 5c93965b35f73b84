/**
 * Decoding `com.atproto.sync.subscribeRepos` frames: each WebSocket message is two DAG-CBOR
 * objects back to back, a header `{ op, t }` and a body. Sizes are bounded before decoding; the
 * decoder (@atcute/cbor) keeps its own stack on the heap, so nesting depth is bounded by the
 * frame size and cannot overflow the JavaScript stack.
 */
import * as CBOR from '@atcute/cbor';
import { BytesWrapper } from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { CID_LENGTH, cidToString, isRepoCid, latin1 } from '../atproto/cid.ts';
import { FrameError } from './errors.ts';

/** Frames larger than this are refused (the relay's own limit on a commit is 2 MB of blocks). */
export const MAX_FRAME_BYTES = 5 * 1024 * 1024;

export interface FrameOp {
  action: 'create' | 'update' | 'delete';
  path: string;
  cid: string | null;
  prev: string | null;
  /** `cid` and `prev` as their 36 bytes (views into the frame), when decoded from one. */
  cidBytes?: Uint8Array | null;
  prevBytes?: Uint8Array | null;
}

export type Frame =
  | {
      t: '#commit'; seq: number; repo: string; rev: string; since: string | null; commit: string; blocks: Uint8Array; ops: FrameOp[]; prevData: string | undefined; tooBig: boolean; time: string;
      /** `commit` and `prevData` as their 36 bytes (views into the frame), when decoded from one: the check needs them so, and need not decode the strings again. */
      commitBytes?: Uint8Array; prevDataBytes?: Uint8Array | undefined;
    }
  | { t: '#sync'; seq: number; did: string; rev: string; blocks: Uint8Array; time: string }
  | { t: '#identity'; seq: number; did: string; handle: string | undefined; time: string }
  | { t: '#account'; seq: number; did: string; active: boolean; status: string | undefined; time: string }
  | { t: '#info'; name: string; message: string | undefined }
  | { t: 'error'; error: string; message: string | undefined };

type Obj = Record<string, unknown>;

function str(o: Obj, k: string, seq?: number): string {
  const v = o[k];
  if (typeof v !== 'string') throw new FrameError('frame-malformed', `field ${k} is not a string`, seq);
  return v;
}
function optStr(o: Obj, k: string, seq?: number): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new FrameError('frame-malformed', `field ${k} is not a string`, seq);
  return v;
}
function link(o: Obj, k: string, seq?: number): CidLinkWrapper {
  const v = o[k];
  if (!(v instanceof CidLinkWrapper)) throw new FrameError('frame-malformed', `field ${k} is not a CID link`, seq);
  return v;
}
function optLink(o: Obj, k: string, seq?: number): CidLinkWrapper | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  if (!(v instanceof CidLinkWrapper)) throw new FrameError('frame-malformed', `field ${k} is not a CID link`, seq);
  return v;
}
function bytes(o: Obj, k: string, seq?: number): Uint8Array {
  const v = o[k];
  if (!(v instanceof BytesWrapper)) throw new FrameError('frame-malformed', `field ${k} is not bytes`, seq);
  return v.buf;
}

/**
 * Decodes one frame.
 *
 * @throws FrameError `frame-too-large`, `frame-malformed` (not two CBOR objects, a field of the
 *   wrong type), `frame-unknown-type` (a message type this consumer does not know); the error
 *   carries the frame's seq when it could be read
 */
export function decodeFrame(data: Uint8Array): Frame {
  if (data.length > MAX_FRAME_BYTES) throw new FrameError('frame-too-large', `frame of ${data.length} bytes is over ${MAX_FRAME_BYTES}`);
  return readCommitFrame(data) ?? decodeAnyFrame(data);
}

/**
 * `decodeFrame` by the general decoder, for any frame (exported for the test that holds
 * `readCommitFrame` to it).
 *
 * @throws FrameError as `decodeFrame`
 */
export function decodeAnyFrame(data: Uint8Array): Frame {
  let header: unknown;
  let body: unknown;
  try {
    const [h, rest] = CBOR.decodeFirst(data);
    header = h;
    body = CBOR.decode(rest);
  } catch (cause) {
    throw new FrameError('frame-malformed', `not a header and a body of DAG-CBOR: ${(cause as Error).message}`, undefined, { cause });
  }
  if (!isObj(header) || !isObj(body)) throw new FrameError('frame-malformed', 'header or body is not a map');
  const seq = typeof body.seq === 'number' && Number.isSafeInteger(body.seq) ? body.seq : undefined;
  if (header.op === -1) return { t: 'error', error: str(body, 'error'), message: optStr(body, 'message') };
  if (header.op !== 1) throw new FrameError('frame-malformed', `header op ${JSON.stringify(header.op)}`, seq);
  const t = header.t;
  if (t === '#info') return { t, name: str(body, 'name'), message: optStr(body, 'message') };
  if (seq === undefined) throw new FrameError('frame-malformed', 'seq is missing or not an integer');
  switch (t) {
    case '#commit': {
      const rawOps = body.ops;
      if (!Array.isArray(rawOps) || rawOps.length > 200) throw new FrameError('frame-malformed', 'ops is not a list of at most 200', seq);
      const ops = rawOps.map((op): FrameOp => {
        if (!isObj(op)) throw new FrameError('frame-malformed', 'an op is not a map', seq);
        const action = op.action;
        if (action !== 'create' && action !== 'update' && action !== 'delete') throw new FrameError('frame-malformed', `op action ${JSON.stringify(action)}`, seq);
        const path = str(op, 'path', seq);
        const cid = optLink(op, 'cid', seq);
        const prev = optLink(op, 'prev', seq);
        return { action, path, cid: cid?.$link ?? null, prev: prev?.$link ?? null, cidBytes: cid?.bytes ?? null, prevBytes: prev?.bytes ?? null };
      });
      const prevData = optLink(body, 'prevData', seq);
      const repo = str(body, 'repo', seq);
      const rev = str(body, 'rev', seq);
      const since = optStr(body, 'since', seq) ?? null;
      const commit = link(body, 'commit', seq);
      return {
        t, seq, repo, rev, since, commit: commit.$link, blocks: bytes(body, 'blocks', seq), ops, prevData: prevData?.$link, tooBig: body.tooBig === true, time: str(body, 'time', seq),
        commitBytes: commit.bytes, prevDataBytes: prevData?.bytes,
      };
    }
    case '#sync':
      return { t, seq, did: str(body, 'did', seq), rev: str(body, 'rev', seq), blocks: bytes(body, 'blocks', seq), time: str(body, 'time', seq) };
    case '#identity':
      return { t, seq, did: str(body, 'did', seq), handle: optStr(body, 'handle', seq), time: str(body, 'time', seq) };
    case '#account': {
      if (typeof body.active !== 'boolean') throw new FrameError('frame-malformed', 'active is not a boolean', seq);
      return { t, seq, did: str(body, 'did', seq), active: body.active, status: optStr(body, 'status', seq), time: str(body, 'time', seq) };
    }
    default:
      throw new FrameError('frame-unknown-type', `unknown message type ${JSON.stringify(t)}`, seq);
  }
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/**
 * A `#commit` frame in the form relays and PDSes send it — the header `{ t: '#commit', op: 1 }`,
 * a body of the lexicon's fields only, in canonical DAG-CBOR with ASCII text — read straight from
 * its bytes; undefined for any other frame, which the general decoder then decides. It accepts
 * only what the general decoder accepts, with the same result (every head minimal, keys in
 * canonical order, links of the CIDs repos use, no field of an unexpected type), and makes no
 * object per field, CID or byte string on the way.
 */
export function readCommitFrame(data: Uint8Array): Extract<Frame, { t: '#commit' }> | undefined {
  if (data.length < COMMIT_HEADER.length) return undefined;
  for (let i = 0; i < COMMIT_HEADER.length; i++) if (data[i] !== COMMIT_HEADER[i]) return undefined;
  r = data;
  at = COMMIT_HEADER.length;
  try {
    return commitBody();
  } catch (err) {
    if (err === NOT_STANDARD) return undefined;
    throw err;
  } finally {
    r = EMPTY;
  }
}

// `{ t: '#commit', op: 1 }`: map of 2, "t", "#commit", "op", 1.
const COMMIT_HEADER = Uint8Array.of(0xa2, 0x61, 0x74, 0x67, 0x23, 0x63, 0x6f, 0x6d, 0x6d, 0x69, 0x74, 0x62, 0x6f, 0x70, 0x01);
// The body's fields in canonical order (by length, then bytes): a field's rank is its place here.
// Each as its encoded key (text head and bytes).
const encodedKey = (name: string) => Uint8Array.of(0x60 | name.length, ...Buffer.from(name));
const BODY_FIELDS = ['ops', 'rev', 'seq', 'repo', 'time', 'blobs', 'since', 'blocks', 'commit', 'rebase', 'tooBig', 'prevData'].map(encodedKey);
const OP_FIELDS = ['cid', 'path', 'prev', 'action'].map(encodedKey);
const NOT_STANDARD = new Error('not the standard form of a commit frame');
const EMPTY = new Uint8Array(0);
// The frame being read and the position in it (one frame at a time, never re-entered).
let r: Uint8Array = EMPTY;
let at = 0;

function commitBody(): Extract<Frame, { t: '#commit' }> {
  const fields = readHead(5);
  let rank = -1;
  let ops: FrameOp[] | undefined;
  let rev: string | undefined;
  let seq: number | undefined;
  let repo: string | undefined;
  let time: string | undefined;
  let since: string | null = null;
  let blocks: Uint8Array | undefined;
  let commit: Uint8Array | undefined;
  let tooBig = false;
  let prevData: Uint8Array | null = null;
  for (let f = 0; f < fields; f++) {
    const next = readField(BODY_FIELDS, rank);
    rank = next;
    switch (next) {
      case 0:
        ops = opList();
        break;
      case 1:
        rev = readText();
        break;
      case 2:
        seq = readHead(0);
        break;
      case 3:
        repo = readText();
        break;
      case 4:
        time = readText();
        break;
      case 5:
        for (let n = readHead(4); n > 0; n--) readLink();
        break;
      case 6:
        since = readNull() ? null : readText();
        break;
      case 7: {
        const length = readHead(2);
        if (at + length > r.length) throw NOT_STANDARD;
        blocks = r.subarray(at, (at += length));
        break;
      }
      case 8:
        commit = readLink();
        break;
      case 9:
        readBool();
        break;
      case 10:
        tooBig = readBool();
        break;
      case 11:
        prevData = readNull() ? null : readLink();
        break;
    }
  }
  if (at !== r.length || ops === undefined || rev === undefined || seq === undefined || repo === undefined || time === undefined || blocks === undefined || commit === undefined) throw NOT_STANDARD;
  return {
    t: '#commit', seq, repo, rev, since, commit: cidToString(commit, 0), blocks, ops, prevData: prevData === null ? undefined : cidToString(prevData, 0), tooBig, time,
    commitBytes: commit, prevDataBytes: prevData ?? undefined,
  };
}

function opList(): FrameOp[] {
  const count = readHead(4);
  if (count > 200) throw NOT_STANDARD; // the general decoder names it
  const ops: FrameOp[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const fields = readHead(5);
    let rank = -1;
    let cid: Uint8Array | null = null;
    let prev: Uint8Array | null = null;
    let path: string | undefined;
    let action: string | undefined;
    for (let f = 0; f < fields; f++) {
      const next = readField(OP_FIELDS, rank);
      rank = next;
      if (next === 0) cid = readNull() ? null : readLink();
      else if (next === 1) path = readText();
      else if (next === 2) prev = readNull() ? null : readLink();
      else action = readText();
    }
    if (path === undefined || (action !== 'create' && action !== 'update' && action !== 'delete')) throw NOT_STANDARD;
    ops[i] = { action, path, cid: cid === null ? null : cidToString(cid, 0), prev: prev === null ? null : cidToString(prev, 0), cidBytes: cid, prevBytes: prev };
  }
  return ops;
}

/**
 * The rank in `fields` of the key next in the frame, which must be one of them ranked after
 * `after` (another key, or one out of order or twice, is not the standard form). Compared as
 * bytes: the keys present are most of them, in order, so the next one is nearly always the first
 * tried.
 */
function readField(fields: Uint8Array[], after: number): number {
  next: for (let k = after + 1; k < fields.length; k++) {
    const key = fields[k]!;
    for (let i = 0; i < key.length; i++) if (r[at + i] !== key[i]) continue next;
    at += key.length;
    return k;
  }
  throw NOT_STANDARD;
}

/** The argument of a head of `major` type in its minimal form, as the general decoder takes it. */
function readHead(major: number): number {
  const first = r[at];
  if (first === undefined || first >> 5 !== major) throw NOT_STANDARD;
  const info = first & 0x1f;
  at++;
  if (info < 24) return info;
  let value: number;
  if (info === 24) {
    value = r[at]!;
    at += 1;
    if (value < 24) throw NOT_STANDARD;
  } else if (info === 25) {
    value = (r[at]! << 8) | r[at + 1]!;
    at += 2;
    if (value < 0x100) throw NOT_STANDARD;
  } else if (info === 26) {
    value = ((r[at]! << 24) | (r[at + 1]! << 16) | (r[at + 2]! << 8) | r[at + 3]!) >>> 0;
    at += 4;
    if (value < 0x10000) throw NOT_STANDARD;
  } else if (info === 27) {
    const hi = ((r[at]! << 24) | (r[at + 1]! << 16) | (r[at + 2]! << 8) | r[at + 3]!) >>> 0;
    const lo = ((r[at + 4]! << 24) | (r[at + 5]! << 16) | (r[at + 6]! << 8) | r[at + 7]!) >>> 0;
    at += 8;
    if (hi > 0x1fffff || hi === 0) throw NOT_STANDARD;
    value = hi * 2 ** 32 + lo;
  } else throw NOT_STANDARD;
  if (at > r.length) throw NOT_STANDARD;
  return value;
}

/** Text of ASCII only (anything else is left to the general decoder's UTF-8 check). */
function readText(): string {
  const length = readHead(3);
  const end = at + length;
  if (end > r.length) throw NOT_STANDARD;
  for (let i = at; i < end; i++) if (r[i]! >= 0x80) throw NOT_STANDARD;
  const s = latin1(r, at, end);
  at = end;
  return s;
}

/** A link: tag 42 over bytes 0x00 and a repo CID; returns the CID's 36 bytes, a view. */
function readLink(): Uint8Array {
  if (r[at] !== 0xd8 || r[at + 1] !== 0x2a || r[at + 2] !== 0x58 || r[at + 3] !== CID_LENGTH + 1 || r[at + 4] !== 0 || !isRepoCid(r, at + 5)) throw NOT_STANDARD;
  at += 5 + CID_LENGTH;
  return r.subarray(at - CID_LENGTH, at);
}

/** Whether a null is next (and taken). */
function readNull(): boolean {
  if (r[at] !== 0xf6) return false;
  at++;
  return true;
}

function readBool(): boolean {
  const b = r[at];
  if (b !== 0xf4 && b !== 0xf5) throw NOT_STANDARD;
  at++;
  return b === 0xf5;
}
