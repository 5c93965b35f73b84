/**
 * A response body read under a byte cap and an idle timeout, as an async iterable of chunks.
 * It owns the connection and the politeness slot: both are let go when the body
 * ends, fails, is cancelled, or when the consumer stops iterating early.
 */
import type { Readable } from 'node:stream';
import { DeadlineError, ResponseTooLargeError, TransportError } from './errors.ts';
import { WireBody } from './wire-body.ts';

/** Marks the abort reasons this package sets itself, to tell them from the caller's. */
export class OwnAbort extends Error {
  override name = 'OwnAbort';
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

// One reason for every body let go: an Error's stack is taken when it is made, which cost more
// than the rest of a small repo's request; nothing reads this one's stack.
const BODY_DROPPED = new OwnAbort('ECANCELED', 'body dropped');

export interface BodyInit {
  /**
   * The decoded body: the pinned request's (its bytes as they came, or a node stream out of its
   * decoder), a web stream (a `fetch` given in tests), or null.
   */
  stream: WireBody | Readable | ReadableStream<Uint8Array> | null;
  /** Closes the connection; the stream then fails with `reason`. */
  abort: (reason: Error) => void;
  /** The caller's signal: its abort reason is rethrown as is, so cancellation stays cancellation. */
  callerSignal: AbortSignal | undefined;
  /** Cap on decoded bytes. */
  maxBytes: number;
  /** Longest wait for the next chunk. */
  idleTimeoutMs: number;
  /**
   * The whole read must end by `startedAt + ms`, plus 1/minBytesPerSecond s per byte read (0: no
   * allowance), whatever the pace of the chunks.
   */
  deadline?: { startedAt: number; ms: number; minBytesPerSecond: number } | undefined;
  /** Redacted URL, for messages. */
  url: string;
  /** Decoded length when the server announced it (no content encoding), else undefined. */
  contentLength: number | undefined;
  /** The transfer's Content-Encoding (`gzip`, …); the chunks are already decoded. */
  contentEncoding: string | undefined;
  /** Called with each chunk's decoded size (progress, heartbeats). */
  onBytes?: ((n: number) => void) | undefined;
  /** Called exactly once when the body is done with, however that happens. */
  onDone: () => void;
}

/** The next chunk of a node stream, or null at its end; waits only when nothing is buffered. */
function nextOf(stream: Readable, wait: (p: Promise<void>) => Promise<void>): Uint8Array | null | Promise<Uint8Array | null> {
  const chunk = stream.read() as Uint8Array | null;
  if (chunk !== null) return chunk;
  if (stream.errored) return Promise.reject(stream.errored);
  if (stream.readableEnded) return null;
  if (stream.destroyed) return Promise.reject(Object.assign(new Error('the body stream closed before its end'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
  return wait(
    new Promise<void>((resolve) => {
      const done = () => {
        stream.off('readable', done);
        stream.off('end', done);
        stream.off('error', done);
        stream.off('close', done);
        resolve();
      };
      stream.on('readable', done);
      stream.on('end', done);
      stream.on('error', done);
      stream.on('close', done);
    }),
  ).then(() => nextOf(stream, wait));
}

export class ResponseBody implements AsyncIterable<Uint8Array> {
  /** The announced length of the decoded body, when there was one. */
  readonly contentLength: number | undefined;
  /** How the body travelled (`gzip`, `deflate`), when it was encoded; the chunks are decoded. */
  readonly contentEncoding: string | undefined;
  /** Decoded bytes read so far. */
  bytesRead = 0;
  readonly #init: BodyInit;
  #used = false;
  #done = false;
  #complete = false;
  /** Why this body closed the connection itself (a stall, the deadline, the cap, dropped). */
  #own: OwnAbort | undefined;

  constructor(init: BodyInit) {
    this.#init = init;
    this.contentLength = init.contentLength;
    this.contentEncoding = init.contentEncoding;
  }

  /**
   * The body's chunks, once. Errors: ResponseTooLargeError as soon as the decoded total passes
   * the cap (the request is aborted then, not drained); TransportError for a reset, a body cut
   * short, a stalled body (`ETIMEDOUT`) or a corrupt compressed stream; the caller's abort reason.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    if (this.#used || this.#done) throw new Error(`response body of ${this.#init.url} was already read or cancelled`);
    this.#used = true;
    const { stream, maxBytes, idleTimeoutMs, url, deadline, callerSignal } = this.#init;
    if (!stream) return this.#finish();
    // Only time spent waiting on the server counts for the idle timeout: a consumer that is slow
    // between chunks (verifying as it reads) is backpressure, not a stalled server. One timer,
    // armed the first time the body has to wait, watches both the idle time and the deadline.
    let timer: ReturnType<typeof setTimeout> | undefined;
    let waitingSince = -1;
    const allowedUntil = () => (deadline === undefined ? Infinity : deadline.startedAt + deadline.ms + (deadline.minBytesPerSecond > 0 ? (this.bytesRead * 1000) / deadline.minBytesPerSecond : 0));
    const check = (): number => {
      const now = Date.now();
      if (waitingSince >= 0 && now - waitingSince >= idleTimeoutMs) {
        this.#abort(new OwnAbort('ETIMEDOUT', `no body data for ${idleTimeoutMs} ms`));
        return -1;
      }
      const until = allowedUntil();
      if (now >= until) {
        const rate = deadline!.minBytesPerSecond > 0 ? ` and ${deadline!.minBytesPerSecond} bytes/s beyond it` : '';
        this.#abort(new OwnAbort('EDEADLINE', `too slow: not complete within the deadline of ${deadline!.ms} ms${rate}`));
        return -1;
      }
      return Math.min(until, waitingSince >= 0 ? waitingSince + idleTimeoutMs : now + idleTimeoutMs) - now;
    };
    const arm = (ms: number) => {
      timer = setTimeout(() => {
        const next = check();
        if (next >= 0) arm(next);
      }, Math.max(1, Math.ceil(ms)));
    };
    const wait = async (p: Promise<void>): Promise<void> => {
      waitingSince = Date.now();
      if (timer === undefined) {
        const next = check();
        if (next >= 0) arm(next);
      }
      try {
        await p;
      } finally {
        waitingSince = -1;
      }
    };
    const onCallerAbort = () => this.#init.abort(callerSignal!.reason as Error);
    callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
    const wire = stream instanceof WireBody ? stream : undefined;
    const web = stream instanceof ReadableStream ? stream.getReader() : undefined;
    try {
      callerSignal?.throwIfAborted();
      for (;;) {
        let chunk: Uint8Array | null;
        try {
          if (wire) {
            let c = wire.read();
            while (c === undefined) {
              await wait(wire.wait());
              c = wire.read();
            }
            chunk = c;
          } else if (web) {
            const read = web.read();
            await wait(read.then(() => {}, () => {}));
            const r = await read;
            chunk = r.done ? null : r.value;
          } else {
            const next = nextOf(stream as Readable, wait);
            chunk = next instanceof Promise ? await next : next;
          }
        } catch (err) {
          throw this.#classify(err);
        }
        if (this.#own) throw this.#classify(this.#own);
        if (chunk === null) {
          this.#complete = true;
          return;
        }
        this.bytesRead += chunk.byteLength;
        if (this.bytesRead > maxBytes) throw new ResponseTooLargeError(url, maxBytes, this.bytesRead);
        if (deadline !== undefined && check() < 0) throw this.#classify(this.#own);
        this.#init.onBytes?.(chunk.byteLength);
        yield chunk;
      }
    } finally {
      clearTimeout(timer);
      callerSignal?.removeEventListener('abort', onCallerAbort);
      web?.releaseLock();
      this.#finish();
    }
  }

  /** The whole body as one buffer (same errors as iterating). */
  async bytes(): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for await (const c of this) chunks.push(c);
    return concat(chunks, this.bytesRead);
  }

  /** Up to `limit` bytes of the body, then the rest is dropped: for error bodies, where a cap is no failure. */
  async readUpTo(limit: number): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let n = 0;
    try {
      for await (const c of this) {
        const take = Math.min(c.byteLength, limit - n);
        chunks.push(c.subarray(0, take));
        n += take;
        if (n >= limit) break;
      }
    } catch (err) {
      if (!(err instanceof ResponseTooLargeError || err instanceof TransportError)) throw err;
    }
    return concat(chunks, n);
  }

  /** Drops the body and closes the connection. Safe to call at any time, more than once. */
  cancel(): void {
    this.#finish();
  }

  #abort(reason: OwnAbort): void {
    this.#own ??= reason;
    this.#init.abort(reason);
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    // After a complete body there is nothing to close: the connection goes back to the pool.
    if (!this.#complete) this.#abort(BODY_DROPPED);
    this.#init.onDone();
  }

  #classify(err: unknown): unknown {
    const { callerSignal, url } = this.#init;
    if (callerSignal?.aborted) return callerSignal.reason;
    const own = this.#own;
    if (own !== undefined && own.code === 'EDEADLINE') return new DeadlineError(url, `${own.message} (${this.bytesRead} bytes read)`, { cause: err });
    if (own !== undefined) return new TransportError(own.code, url, `${own.message} after ${this.bytesRead} bytes`, { cause: err });
    const code = errorCode(err);
    const what = code.startsWith('Z_') ? 'compressed body is corrupt or cut short' : 'connection closed in the middle of the body';
    return new TransportError(code, url, `${what} after ${this.bytesRead} bytes`, { cause: err });
  }
}

/** The most specific error code on an error or its causes (`ECONNRESET`, `UND_ERR_SOCKET`, …). */
export function errorCode(err: unknown): string {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const inner = (e as { errors?: unknown }).errors;
    if (Array.isArray(inner) && inner.length > 0) {
      const c = errorCode(inner[0]);
      if (c !== 'EUNKNOWN') return c;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return 'EUNKNOWN';
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
