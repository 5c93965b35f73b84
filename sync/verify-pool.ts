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
import type { CommitChange, CommitOp } from '../ingest/changes.ts';
import { CommitVerifyError, type CommitProblem } from './errors.ts';
import { verifyCommitFrame, type CommitFrame } from './verify-commit.ts';

/** Checks one commit frame against a signing key; `verifyCommitFrame`'s contract. */
export interface CommitVerifier {
  verify(frame: CommitFrame, signingKey: string): Promise<CommitChange>;
  close(): Promise<void>;
}

/** On the caller's thread. */
export const inlineVerifier: CommitVerifier = { verify: verifyCommitFrame, close: async () => {} };

export interface VerifyJob {
  frame: CommitFrame;
  key: string;
}
export type VerifyResult =
  | { ok: true; dataCid: string; ops: CommitOp[]; mstNodes: string[]; spans: [cid: string, offset: number, length: number][]; copies: [string, Uint8Array][] }
  | { ok: false; error: { type: 'signature' | 'verify' | 'other'; code: string; message: string } };
export interface VerifyReply {
  id: number;
  results: VerifyResult[];
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
      // The frame's blocks travel as a copy of their own; the answer names offsets into them,
      // which are offsets into the caller's original too.
      const jobs: VerifyJob[] = [];
      const transfer: ArrayBuffer[] = [];
      for (const p of chunk) {
        const blocks = new Uint8Array(p.frame.blocks); // a copy (a Buffer's slice is a view)
        jobs.push({ frame: { ...p.frame, blocks }, key: p.key });
        transfer.push(blocks.buffer);
      }
      t.worker.postMessage({ id, jobs }, transfer);
    }
  }

  #spawn(): Thread {
    const worker = new Worker(new URL('./verify-worker.ts', import.meta.url));
    const t: Thread = { worker, inFlight: new Map(), jobs: 0 };
    worker.on('message', (reply: VerifyReply) => {
      const chunk = t.inFlight.get(reply.id);
      if (!chunk) return;
      t.inFlight.delete(reply.id);
      t.jobs -= chunk.length;
      chunk.forEach((p, i) => settle(p, reply.results[i]!));
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

function settle(p: Pending, r: VerifyResult): void {
  if (!r.ok) {
    const { type, code, message } = r.error;
    if (type === 'signature') return p.reject(new SignatureError(code as SignatureErrorCode, message));
    if (type === 'verify') return p.reject(new CommitVerifyError(code as CommitProblem, message));
    return p.reject(new Error(`verifying commit ${p.frame.rev} of ${p.frame.repo} failed: ${code}: ${message}`));
  }
  const src = p.frame.blocks;
  const blocks = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const [cid, offset, length] of r.spans) blocks.set(cid, new Uint8Array(src.buffer as ArrayBuffer, src.byteOffset + offset, length));
  for (const [cid, bytes] of r.copies) blocks.set(cid, bytes as Uint8Array<ArrayBuffer>);
  const f = p.frame;
  p.resolve({ kind: 'commit', did: f.repo, rev: f.rev, since: f.since, commitCid: f.commit, dataCid: r.dataCid, prevData: f.prevData, ops: r.ops, blocks, mstNodes: r.mstNodes });
}
