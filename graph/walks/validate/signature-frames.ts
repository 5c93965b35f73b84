/**
 * The signature worker's messages as bytes: the commits asked for in one turn packed into one
 * ArrayBuffer that is moved to the worker, not cloned, and the worker's answer as the ids that
 * verified (moved back) beside the few that did not, with their messages. A message of objects
 * cost the walk's thread a structured clone of each commit and its three byte arrays — on a walk
 * of small repos a twentieth of that thread's time, with a signature every 40 nodes.
 *
 * A job is what a signature check reads: the signed bytes and the signature, the commit's CID
 * and DID for messages, and the signing key as stored (any text: it is read back as UTF-8).
 * Integers are little-endian `u32`.
 *
 *   job  := id:u32 · cid:str · did:str · key:str · sig:bytes · unsigned:bytes
 *   str  := length:u32 · UTF-8
 *   bytes:= length:u32 · bytes
 */
import type { Commit } from '../../../atproto/commit.ts';

export interface SignatureJob {
  id: number;
  commit: Commit;
  cid: string;
  key: string;
}

/** A job as the worker reads it back: the commit has the fields a signature check reads. */
export interface FramedJob {
  id: number;
  commit: Pick<Commit, 'did' | 'sig' | 'unsigned'>;
  cid: string;
  key: string;
}

export interface SignatureAnswer {
  /** Ids of the jobs whose signature verified. */
  ok: Uint32Array;
  /** The others, with the message of the error the check threw. */
  failed: { id: number; error: string }[];
}

/** `jobs` as one buffer (`FRAME` above), to be moved to the worker. */
export function frameJobs(jobs: readonly SignatureJob[]): ArrayBuffer {
  let size = 0;
  for (const j of jobs) size += 24 + Buffer.byteLength(j.cid) + Buffer.byteLength(j.commit.did) + Buffer.byteLength(j.key) + j.commit.sig.length + j.commit.unsigned.length;
  const buf = Buffer.allocUnsafeSlow(size);
  let at = 0;
  const u32 = (n: number) => (at = buf.writeUInt32LE(n, at));
  const str = (s: string) => {
    const n = buf.write(s, at + 4, 'utf8');
    u32(n);
    at += n;
  };
  const bytes = (b: Uint8Array) => {
    u32(b.length);
    buf.set(b, at);
    at += b.length;
  };
  for (const j of jobs) {
    u32(j.id);
    str(j.cid);
    str(j.commit.did);
    str(j.key);
    bytes(j.commit.sig);
    bytes(j.commit.unsigned);
  }
  return buf.buffer as ArrayBuffer;
}

/**
 * The jobs in a buffer `frameJobs` made; their byte arrays are views of it.
 * @throws {RangeError} when the buffer is cut short.
 */
export function readJobs(frame: ArrayBuffer): FramedJob[] {
  const buf = Buffer.from(frame);
  const out: FramedJob[] = [];
  let at = 0;
  const u32 = () => {
    const n = buf.readUInt32LE(at);
    at += 4;
    return n;
  };
  const bytes = () => {
    const n = u32();
    if (at + n > buf.length) throw new RangeError(`signature job frame cut short at byte ${at}: ${n} more bytes expected, ${buf.length - at} there`);
    const b = buf.subarray(at, at + n);
    at += n;
    return b;
  };
  const str = () => bytes().toString('utf8');
  while (at < buf.length) {
    const id = u32();
    const cid = str();
    const did = str();
    const key = str();
    const sig = bytes();
    const unsigned = bytes();
    out.push({ id, cid, key, commit: { did, sig, unsigned } });
  }
  return out;
}
