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
import { commitOps, verifyCommitFrame, type CommitFrame } from './verify-commit.ts';

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
 * the frames' blocks side by side in one transferred buffer, and per frame `FRAME_FIELDS` strings
 * then `OP_FIELDS` per op in `meta`.
 */
export interface VerifyJobs {
  id: number;
  blocks: Uint8Array;
  /** Per frame: start and length of its blocks in `blocks`. */
  spans: number[];
  meta: (string | null)[];
}
/** repo, rev, commit, prevData, key, op count (as a string). */
export const FRAME_FIELDS = 6;
/** action, path, cid, prev. */
export const OP_FIELDS = 4;

/**
 * A thread's answer, flat likewise: per frame an error or null (checked); for each checked frame
 * in order, its data root, the CIDs of the blocks the store needs (`checkCommitFrame`'s `keep`,
 * the new tree's nodes last) in `cids`, and in `nums` their count, the nodes' count, then each
 * block's offset and length in the frame's blocks.
 */
export interface VerifyReply {
  id: number;
  errors: ({ type: 'signature' | 'verify' | 'other'; code: string; message: string } | null)[];
  cids: string[];
  nums: number[];
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
      for (const p of chunk) bytes += p.frame.blocks.length;
      const blocks = new Uint8Array(bytes);
      const spans: number[] = [];
      const meta: (string | null)[] = [];
      let at = 0;
      for (const p of chunk) {
        const f = p.frame;
        blocks.set(f.blocks, at);
        spans.push(at, f.blocks.length);
        at += f.blocks.length;
        meta.push(f.repo, f.rev, f.commit, f.prevData ?? null, p.key, String(f.ops.length));
        for (const op of f.ops) meta.push(op.action, op.path, op.cid, op.prev);
      }
      t.worker.postMessage({ id, blocks, spans, meta } satisfies VerifyJobs, [blocks.buffer]);
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
      let c = 0;
      let n = 0;
      chunk.forEach((p, i) => {
        const error = reply.errors[i];
        if (error) return settleError(p, error);
        const dataCid = reply.cids[c++]!;
        const count = reply.nums[n++]!;
        const nodes = reply.nums[n++]!;
        const src = p.frame.blocks;
        const blocks = new Map<string, Uint8Array>();
        const mstNodes: string[] = [];
        for (let k = 0; k < count; k++) {
          const cid = reply.cids[c++]!;
          blocks.set(cid, new Uint8Array(src.buffer, src.byteOffset + reply.nums[n++]!, reply.nums[n++]!));
          if (k >= count - nodes) mstNodes.push(cid);
        }
        const f = p.frame;
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
