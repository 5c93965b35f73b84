/**
 * Commit verification on worker threads. Checking a `#commit` (the CAR's hashes, the signature,
 * the MST proof) is most of live sync's CPU, and a commit's check needs nothing but the frame and
 * the key, so the frames of a batch are checked in parallel while the consumer's own thread
 * decodes, stores and waits on PostgreSQL. The checks are `verifyCommitFrame`'s, unchanged; the
 * answer is the same `CommitChange` (its blocks are views into the caller's frame, as inline) or
 * the same named error.
 */
import { Worker } from 'node:worker_threads';
import { SignatureError, type SignatureErrorCode } from '../atproto/errors.ts';
import type { CommitChange } from '../ingest/changes.ts';
import { CommitVerifyError, type CommitProblem } from './errors.ts';
import { CID_LENGTH, cidToString } from '../atproto/cid.ts';
import { commitOps, frameCids, verifyCommitFrame, type CommitFrame, type FrameCids } from './verify-commit.ts';

/** Checks one commit frame against a signing key; `verifyCommitFrame`'s contract. */
export interface CommitVerifier {
  verify(frame: CommitFrame, signingKey: string): Promise<CommitChange>;
  close(): Promise<void>;
}

/** On the caller's thread. */
export const inlineVerifier: CommitVerifier = { verify: verifyCommitFrame, close: async () => {} };

/**
 * A chunk of frames for a thread, flat so that it crosses threads cheaply (a structured clone of
 * an object per frame and per op, and a transfer per frame, cost more than the check's hashing):
 * per frame, its blocks then its CIDs' 36 bytes (the commit, prevData if any, each op's cid and
 * prev where it has them) side by side in one transferred buffer, `FRAME_INTS` numbers then one
 * per op in `ints` (transferred too), and its repo, rev, key and op paths in `strings`.
 */
export interface VerifyJobs {
  id: number;
  bytes: Uint8Array;
  ints: Int32Array;
  strings: string[];
}
/** Start of the frame's blocks in `bytes`, their length, whether it carries prevData, its op count. */
export const FRAME_INTS = 4;
/** Per op: its action's index in ACTIONS, plus HAS_CID and HAS_PREV. */
export const ACTIONS = ['create', 'update', 'delete'] as const;
export const HAS_CID = 4;
export const HAS_PREV = 8;

/**
 * A thread's answer, flat likewise: per frame an error or null (checked) in `errors`; for each
 * checked frame in order, in `ints`, where its data root's CID starts in its blocks, how many
 * blocks the store needs (`checkCommitFrame`'s `keep`, the new tree's nodes last) and how many of
 * them are nodes, then each block's start (its CID; its data follows) and end in the frame's
 * blocks. The caller holds the same bytes and makes the CID strings and views from them.
 */
export interface VerifyReply {
  id: number;
  errors: ({ type: 'signature' | 'verify' | 'other'; code: string; message: string } | null)[];
  ints: Int32Array;
}

interface Pending {
  frame: CommitFrame;
  key: string;
  resolve: (c: CommitChange) => void;
  reject: (e: unknown) => void;
}
interface Thread {
  worker: Worker;
  inFlight: Map<number, Pending[]>;
  jobs: number;
}

/** Frames per message to a thread: fewer messages, while a batch still spreads over every thread. */
const CHUNK = 32;

export class VerifyPool implements CommitVerifier {
  readonly #size: number;
  readonly #threads: Thread[] = [];
  #queue: Pending[] = [];
  #scheduled = false;
  #nextId = 1;
  #closed = false;

  constructor(threads: number) {
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`a verify pool needs at least one thread, not ${threads}`);
    this.#size = threads;
  }

  verify(frame: CommitFrame, signingKey: string): Promise<CommitChange> {
    if (this.#closed) return Promise.reject(new Error('the verify pool is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ frame, key: signingKey, resolve, reject });
      if (this.#queue.length >= CHUNK * this.#size) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const threads = this.#threads.splice(0);
    for (const t of threads) this.#fail(t, new Error('the verify pool closed'));
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0 || this.#closed) return;
    while (this.#threads.length < this.#size) this.#threads.push(this.#spawn());
    const queue = this.#queue;
    this.#queue = [];
    // Even chunks for every thread, at most CHUNK frames each, each to the least busy thread.
    const per = Math.min(CHUNK, Math.ceil(queue.length / this.#size));
    for (let i = 0; i < queue.length; i += per) {
      const chunk = queue.slice(i, i + per);
      const t = this.#threads.reduce((a, b) => (b.jobs < a.jobs ? b : a));
      const id = this.#nextId++;
      t.inFlight.set(id, chunk);
      t.jobs += chunk.length;
      // The frames' blocks travel as one copy; the answer names offsets into each frame's
      // blocks, which are offsets into the caller's original too.
      let bytes = 0;
      let ints = 0;
      const links: (FrameCids | undefined)[] = new Array(chunk.length);
      for (let k = 0; k < chunk.length; k++) {
        const f = chunk[k]!.frame;
        const cids = (links[k] = frameCids(f));
        bytes += f.blocks.length + CID_LENGTH * (1 + (cids.prevData === null ? 0 : 1));
        for (const c of cids.ops) if (c !== null) bytes += CID_LENGTH;
        ints += FRAME_INTS + f.ops.length;
      }
      const buffer = new Uint8Array(bytes);
      const numbers = new Int32Array(ints);
      const strings: string[] = [];
      let at = 0;
      let n = 0;
      for (let k = 0; k < chunk.length; k++) {
        const p = chunk[k]!;
        const f = p.frame;
        const cids = links[k]!;
        buffer.set(f.blocks, at);
        numbers[n++] = at;
        numbers[n++] = f.blocks.length;
        numbers[n++] = cids.prevData === null ? 0 : 1;
        numbers[n++] = f.ops.length;
        at += f.blocks.length;
        at = putCid(buffer, at, cids.commit);
        if (cids.prevData !== null) at = putCid(buffer, at, cids.prevData);
        strings.push(f.repo, f.rev, p.key);
        for (let i = 0; i < f.ops.length; i++) {
          const op = f.ops[i]!;
          const cid = cids.ops[2 * i]!;
          const prev = cids.ops[2 * i + 1]!;
          numbers[n++] = ACTIONS.indexOf(op.action) + (cid === null ? 0 : HAS_CID) + (prev === null ? 0 : HAS_PREV);
          if (cid !== null) at = putCid(buffer, at, cid);
          if (prev !== null) at = putCid(buffer, at, prev);
          strings.push(op.path);
        }
      }
      t.worker.postMessage({ id, bytes: buffer, ints: numbers, strings } satisfies VerifyJobs, [buffer.buffer, numbers.buffer]);
    }
  }

  #spawn(): Thread {
    const worker = new Worker(new URL('./verify-worker.ts', import.meta.url), { name: 'verify' });
    const t: Thread = { worker, inFlight: new Map(), jobs: 0 };
    worker.on('message', (reply: VerifyReply) => {
      const chunk = t.inFlight.get(reply.id);
      if (!chunk) return;
      t.inFlight.delete(reply.id);
      t.jobs -= chunk.length;
      const ints = reply.ints;
      let n = 0;
      chunk.forEach((p, i) => {
        const error = reply.errors[i];
        if (error) return settleError(p, error);
        const f = p.frame;
        const src = f.blocks;
        const dataCid = cidToString(src, ints[n++]!);
        const count = ints[n++]!;
        const nodes = ints[n++]!;
        const blocks = new Map<string, Uint8Array>();
        const mstNodes: string[] = [];
        for (let k = 0; k < count; k++) {
          const start = ints[n++]!;
          const end = ints[n++]!;
          const cid = cidToString(src, start);
          // A plain view even when the frame is a Buffer (a Buffer's subarray is a Buffer, slower to make).
          blocks.set(cid, new Uint8Array(src.buffer, src.byteOffset + start + CID_LENGTH, end - start - CID_LENGTH));
          if (k >= count - nodes) mstNodes.push(cid);
        }
        let ops;
        try {
          ops = commitOps(f);
        } catch (err) {
          return p.reject(err);
        }
        p.resolve({ kind: 'commit', did: f.repo, rev: f.rev, since: f.since, commitCid: f.commit, dataCid, prevData: f.prevData, ops, blocks, mstNodes });
      });
    });
    const lost = (err: Error) => {
      const at = this.#threads.indexOf(t);
      if (at >= 0) this.#threads.splice(at, 1); // the next flush starts another
      this.#fail(t, err);
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`a verify thread exited with code ${code}`)));
    worker.unref();
    return t;
  }

  #fail(t: Thread, err: Error): void {
    for (const chunk of t.inFlight.values()) for (const p of chunk) p.reject(err);
    t.inFlight.clear();
    t.jobs = 0;
  }
}

function settleError(p: Pending, error: { type: 'signature' | 'verify' | 'other'; code: string; message: string }): void {
  const { type, code, message } = error;
  if (type === 'signature') return p.reject(new SignatureError(code as SignatureErrorCode, message));
  if (type === 'verify') return p.reject(new CommitVerifyError(code as CommitProblem, message));
  return p.reject(new Error(`verifying commit ${p.frame.rev} of ${p.frame.repo} failed: ${code}: ${message}`));
}

function putCid(buffer: Uint8Array, at: number, cid: Uint8Array): number {
  // NOT_A_REPO_CID (a frame made by hand) goes as 36 zero bytes, which no repo CID is: the
  // thread takes them back as NOT_A_REPO_CID.
  if (cid.length === CID_LENGTH) buffer.set(cid, at);
  return at + CID_LENGTH;
}
