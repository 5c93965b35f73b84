/**
 * Decoding `com.atproto.sync.subscribeRepos` frames: each WebSocket message is two DAG-CBOR
 * objects back to back, a header `{ op, t }` and a body. Sizes are bounded before decoding; the
 * decoder (@atcute/cbor) keeps its own stack on the heap, so nesting depth is bounded by the
 * frame size and cannot overflow the JavaScript stack.
 */
import * as CBOR from '@atcute/cbor';
import { BytesWrapper } from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { FrameError } from './errors.ts';

/** Frames larger than this are refused (the relay's own limit on a commit is 2 MB of blocks). */
export const MAX_FRAME_BYTES = 5 * 1024 * 1024;

export interface FrameOp {
  action: 'create' | 'update' | 'delete';
  path: string;
  cid: string | null;
  prev: string | null;
}

export type Frame =
  | { t: '#commit'; seq: number; repo: string; rev: string; since: string | null; commit: string; blocks: Uint8Array; ops: FrameOp[]; prevData: string | undefined; tooBig: boolean; time: string }
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
function link(o: Obj, k: string, seq?: number): string {
  const v = o[k];
  if (!(v instanceof CidLinkWrapper)) throw new FrameError('frame-malformed', `field ${k} is not a CID link`, seq);
  return v.$link;
}
function optLink(o: Obj, k: string, seq?: number): string | null {
  const v = o[k];
  if (v === undefined || v === null) return null;
  if (!(v instanceof CidLinkWrapper)) throw new FrameError('frame-malformed', `field ${k} is not a CID link`, seq);
  return v.$link;
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
        return { action, path: str(op, 'path', seq), cid: optLink(op, 'cid', seq), prev: optLink(op, 'prev', seq) };
      });
      const prevData = optLink(body, 'prevData', seq);
      return {
        t, seq, repo: str(body, 'repo', seq), rev: str(body, 'rev', seq), since: optStr(body, 'since', seq) ?? null, commit: link(body, 'commit', seq),
        blocks: bytes(body, 'blocks', seq), ops, prevData: prevData ?? undefined, tooBig: body.tooBig === true, time: str(body, 'time', seq),
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
