/**
 * Commit signatures verified on a worker thread, with the same function import uses
 * (`verifyCommitSignature`). A walk of small repos verifies one signature per handful of nodes,
 * and on the walk's thread that was its largest single cost; on a worker it runs beside the walk,
 * on the machine's other core. One worker serves every walk of the process, and lets the
 * process exit when idle.
 *
 * The commits asked for in one turn of the event loop go in one message, and their results come
 * back in one: a message costs the walk's thread some 40 µs whatever it carries, as much as
 * the signature costs the worker.
 */
import { Worker } from 'node:worker_threads';
import type { Commit } from '../../../atproto/commit.ts';
import type { SignatureJob, SignatureResult } from './signature-worker.ts';

let worker: Worker | undefined;
let nextId = 0;
const waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
/** Jobs asked for in this turn, sent together at its end. */
let queued: SignatureJob[] = [];

function start(): Worker {
  const w = new Worker(new URL('./signature-worker.ts', import.meta.url));
  w.unref();
  w.on('message', (results: SignatureResult[]) => {
    for (const m of results) {
      const p = waiting.get(m.id);
      if (!p) continue;
      waiting.delete(m.id);
      if (m.error === null) p.resolve();
      else p.reject(new Error(m.error));
    }
    if (waiting.size === 0) w.unref();
  });
  const fail = (err: Error) => {
    if (worker === w) worker = undefined;
    for (const p of waiting.values()) p.reject(err);
    waiting.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`signature worker exited with code ${code}`)));
  return w;
}

/**
 * Resolves when `commit`'s signature verifies with `signingKey`.
 * @throws {Error} with the message of the `SignatureError` import would throw.
 */
export function verifyCommitSignatureOffThread(commit: Commit, commitCid: string, signingKey: string): Promise<void> {
  worker ??= start();
  const w = worker;
  const id = nextId++;
  // Held while work is waiting, so that a walk's process does not exit under it.
  if (waiting.size === 0) w.ref();
  return new Promise<void>((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    if (queued.length === 0) {
      setImmediate(() => {
        // Jobs a dead worker's failure rejected meanwhile are dropped; any later ones started
        // the worker that is there now.
        const jobs = queued.filter((j) => waiting.has(j.id));
        queued = [];
        if (worker && jobs.length > 0) worker.postMessage(jobs);
      });
    }
    queued.push({ id, commit: compact(commit), cid: commitCid, key: signingKey });
  });
}

/**
 * The commit with its bytes in buffers of their own. A decoded commit's `sig` and `dataBytes`
 * are views of the pack the block was read from, and a message carries a view's whole buffer:
 * a commit of a 1 MB pack cost 2 MB to copy to the worker.
 */
export function compact(commit: Commit): Commit {
  const own = (b: Uint8Array) => (b.byteLength === b.buffer.byteLength ? b : b.slice());
  const out: Commit = { ...commit, sig: own(commit.sig), unsigned: own(commit.unsigned) };
  if (commit.dataBytes) out.dataBytes = own(commit.dataBytes);
  return out;
}
