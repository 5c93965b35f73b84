/**
 * Commit signatures verified on a worker thread, with the same function import uses
 * (`verifyCommitSignature`). A walk of small repos verifies one signature per handful of nodes,
 * and on the walk's thread that was its largest single cost; on a worker it runs beside the walk,
 * on the machine's other core. One worker serves every walk of the process, and lets the
 * process exit when idle.
 *
 * The commits asked for in one turn of the event loop go in one message, and their results come
 * back in one: a message costs the walk's thread some 40 µs whatever it carries, as much as
 * the signature costs the worker. The message is bytes moved, not objects cloned
 * (`signature-frames.ts`).
 */
import { Worker } from 'node:worker_threads';
import type { Commit } from '../../../atproto/commit.ts';
import { type SignatureAnswer, type SignatureJob, frameJobs } from './signature-frames.ts';

let worker: Worker | undefined;
let nextId = 0;
const waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
/** Jobs asked for in this turn, sent together at its end. */
let queued: SignatureJob[] = [];

function start(): Worker {
  const w = new Worker(new URL('./signature-worker.ts', import.meta.url));
  w.unref();
  w.on('message', (answer: SignatureAnswer) => {
    for (const id of answer.ok) {
      const p = waiting.get(id);
      if (!p) continue;
      waiting.delete(id);
      p.resolve();
    }
    for (const m of answer.failed) {
      const p = waiting.get(m.id);
      if (!p) continue;
      waiting.delete(m.id);
      p.reject(new Error(m.error));
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
  const id = nextId++ >>> 0;
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
        if (!worker || jobs.length === 0) return;
        // Only the bytes a check reads are copied (a decoded commit's fields are views of the
        // pack its block came from), into one buffer the worker takes over.
        const frame = frameJobs(jobs);
        worker.postMessage(frame, [frame]);
      });
    }
    queued.push({ id, commit, cid: commitCid, key: signingKey });
  });
}
