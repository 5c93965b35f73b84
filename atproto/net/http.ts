/**
 * One guarded, polite, capped GET: the address guard on every hop, a politeness slot for the
 * first host, a timeout until the response headers, redirects followed by hand (so a redirect
 * cannot lead past the guard), and connection failures turned into TransportError. The body
 * comes back as a ResponseBody that holds the slot until it is read or dropped.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { type LookupFn, answersAtOnce, guardedAddresses } from './address-guard.ts';
import { startPinnedGet } from './pinned-fetch.ts';
import type { WireBody } from './wire-body.ts';
import { OwnAbort, ResponseBody, errorCode } from './body.ts';
import { BadRedirectError, DeadlineError, NetError, RateLimitedError, ResponseTooLargeError, TransportError, redactUrl } from './errors.ts';
import type { Politeness, Release } from './politeness.ts';

export interface HttpOptions {
  /** Allow private, loopback and link-local addresses (tests). */
  allowPrivate: boolean;
  /**
   * Longest wait for the response headers, name resolution and connection included, counted
   * from when the politeness slot is granted (queueing for a slot is not a server fault). Default 30 s.
   */
  timeoutMs?: number;
  /** Longest wait for the next body chunk. Default `timeoutMs`. */
  idleTimeoutMs?: number;
  /**
   * Total time for the whole read (every redirect hop, the headers and the body), counted from
   * when the politeness slot is granted: the idle timeout alone lets a server that drips a byte
   * at a time hold a request for hours. Default 120 s.
   */
  deadlineMs?: number;
  /**
   * Least average rate a large body must keep: each byte read extends the deadline by
   * 1/minBytesPerSecond s, so a big CAR downloading steadily is never cut off, a drip is.
   * Default 32 KiB/s; 0 for a fixed deadline.
   */
  minBytesPerSecond?: number;
  /** Cancels the request; its reason is rethrown unchanged. */
  signal?: AbortSignal;
  /** Per-host limits; without it requests are not limited. */
  politeness?: Politeness;
  /**
   * Replaces the connection (tests route requests with it). Default: a request pinned to the
   * addresses the guard checked (pinned-fetch.ts).
   */
  fetch?: typeof globalThis.fetch;
  /** Name resolution for the address guard (tests). */
  lookup?: LookupFn;
}

export interface GetOptions extends HttpOptions {
  /** Cap on the decoded body of a successful response. */
  maxBytes: number;
  headers?: Record<string, string>;
  /** Called with each body chunk's decoded size (progress, heartbeats). */
  onBytes?: (n: number) => void;
}

export interface HttpResponse {
  status: number;
  headers: ResponseHeaders;
  /** The final URL, redacted. */
  url: string;
  /** The first URL's host (name:port), the politeness key. */
  host: string;
  body: ResponseBody;
}

/** What is read of a response's headers: a `Headers`, or node's headers behind the same `get`. */
export interface ResponseHeaders {
  /** The header's value (repeated ones joined by `, `), or null. */
  get(name: string): string | null;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_DEADLINE_MS = 120_000;
export const DEFAULT_MIN_BYTES_PER_SECOND = 32 * 1024;
const MAX_REDIRECTS = 3;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * GETs `url`. Resolves once the headers of a non-redirect response arrive, whatever its status.
 *
 * @throws ForbiddenAddressError when a hop's host is refused
 * @throws TransportError for DNS, connection and timeout failures, and too many redirects
 * @throws DeadlineError when the headers do not arrive within the deadline (the body has its own
 *   check of the same deadline)
 * @throws BadRedirectError when a redirect's Location is not a URL (`http://[`, a port past 65535, …)
 * @throws ResponseTooLargeError when a successful response announces more than `maxBytes`
 * @throws RateLimitedError when the host is cooling down past the politeness wait limit
 * @throws the caller's abort reason when `signal` aborts
 */
export async function httpGet(url: URL, opts: GetOptions): Promise<HttpResponse> {
  const host = url.host;
  const release: Release = opts.politeness ? await opts.politeness.acquire(host, opts.signal) : () => {};
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = { startedAt: Date.now(), ms: opts.deadlineMs ?? DEFAULT_DEADLINE_MS, minBytesPerSecond: opts.minBytesPerSecond ?? DEFAULT_MIN_BYTES_PER_SECOND };
  let current = url;
  try {
    for (let hop = 0; ; hop++) {
      const shown = redactUrl(current);
      // Why this request gave up on its own (the timeout, the deadline); what it aborts then.
      let own: OwnAbort | undefined;
      let abortNow: ((reason: Error) => void) | undefined;
      const giveUp = (reason: OwnAbort) => {
        own = reason;
        abortNow?.(reason);
      };
      const left = deadline.startedAt + deadline.ms - Date.now();
      // One timer per hop, until the headers; the body has its own (body.ts).
      const timer =
        left < timeoutMs
          ? setTimeout(() => giveUp(new OwnAbort('EDEADLINE', `not answered within the deadline of ${deadline.ms} ms`)), Math.max(0, left))
          : setTimeout(() => giveUp(new OwnAbort('ETIMEDOUT', `no response within ${timeoutMs} ms`)), timeoutMs);
      let res: Exchange;
      try {
        const { addresses } = await guardedAddresses(current, { allowPrivate: opts.allowPrivate, lookup: opts.lookup, signal: lookupSignal(current, opts.lookup, opts.signal, (abort) => (abortNow = abort)) });
        if (own) throw own;
        const headers = { 'accept-encoding': 'gzip, deflate', ...opts.headers };
        // The connection goes to the checked addresses only (no second lookup: DNS rebinding).
        if (opts.fetch) {
          res = await viaFetch(opts.fetch, current, headers, opts.signal, (abort) => (abortNow = abort));
        } else {
          const request = startPinnedGet(current, { headers, addresses, signal: opts.signal });
          abortNow = request.abort;
          if (own) request.abort(own);
          const r = await request.response;
          res = { status: r.status, headers: nodeHeaders(r.headers), stream: r.body, abort: r.abort };
        }
      } catch (err) {
        throw requestFailure(err, opts.signal, own, shown);
      } finally {
        clearTimeout(timer);
      }

      const location = res.headers.get('location');
      if (REDIRECTS.has(res.status) && location !== null) {
        res.abort(new OwnAbort('ECANCELED', 'redirect'));
        if (hop >= MAX_REDIRECTS) throw new TransportError('EREDIRECTS', shown, `more than ${MAX_REDIRECTS} redirects`);
        current = redirectTarget(location, current, shown);
        continue;
      }

      const ok = res.status >= 200 && res.status < 300;
      const contentLength = announcedLength(res.headers);
      if (ok && contentLength !== undefined && contentLength > opts.maxBytes) {
        res.abort(new OwnAbort('ECANCELED', 'too large'));
        throw new ResponseTooLargeError(shown, opts.maxBytes, contentLength);
      }
      const body = new ResponseBody({
        stream: res.stream,
        abort: res.abort,
        callerSignal: opts.signal,
        maxBytes: ok ? opts.maxBytes : Number.MAX_SAFE_INTEGER,
        idleTimeoutMs: opts.idleTimeoutMs ?? timeoutMs,
        deadline,
        url: shown,
        contentLength,
        contentEncoding: res.headers.get('content-encoding') ?? undefined,
        onBytes: ok ? opts.onBytes : undefined,
        onDone: release,
      });
      return { status: res.status, headers: res.headers, url: shown, host, body };
    }
  } catch (err) {
    release();
    throw err;
  }
}

/** A response as httpGet reads it, whichever way it came. */
interface Exchange {
  status: number;
  headers: ResponseHeaders;
  stream: WireBody | Readable | ReadableStream<Uint8Array> | null;
  abort: (reason: Error) => void;
}

/**
 * The signal for the address guard's name lookup: none for an IP literal or a name whose DNS
 * answer is kept (nothing to wait for), else one the hop's timeout aborts (and the caller's
 * signal, when there is one).
 */
function lookupSignal(url: URL, lookup: LookupFn | undefined, callerSignal: AbortSignal | undefined, onAbort: (abort: (reason: Error) => void) => void): AbortSignal | undefined {
  if (answersAtOnce(url, lookup)) return undefined;
  const controller = new AbortController();
  onAbort((reason) => controller.abort(reason));
  return callerSignal ? AbortSignal.any([callerSignal, controller.signal]) : controller.signal;
}

/** The request through a `fetch` given in the options (tests): it takes a signal, so it gets one. */
async function viaFetch(fetch: typeof globalThis.fetch, url: URL, headers: Record<string, string>, callerSignal: AbortSignal | undefined, onAbort: (abort: (reason: Error) => void) => void): Promise<Exchange> {
  const controller = new AbortController();
  const abort = (reason: Error) => controller.abort(reason);
  onAbort(abort);
  const signal = callerSignal ? AbortSignal.any([callerSignal, controller.signal]) : controller.signal;
  const res = await fetch(url, { headers, redirect: 'manual', signal });
  return { status: res.status, headers: res.headers, stream: res.body, abort };
}

/** Node's response headers, read as a `Headers` is (names lower-case; repeated ones joined). */
function nodeHeaders(raw: IncomingHttpHeaders): ResponseHeaders {
  return {
    get(name: string): string | null {
      const v = raw[name.toLowerCase()];
      return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
    },
  };
}

/**
 * A 429's error, after starting the host's cool-down so that other requests to it wait too.
 * Drops the response body.
 */
export function rateLimited(res: HttpResponse, politeness: Politeness | undefined, what: string): RateLimitedError {
  res.body.cancel();
  const retryAfterMs = retryDelayMs(res.headers, Date.now());
  politeness?.coolDown(res.host, retryAfterMs);
  return new RateLimitedError(res.host, retryAfterMs, what);
}

/**
 * How long a 429 asks us to wait: `Retry-After` (delay seconds or an HTTP date), else
 * `RateLimit-Reset`. The atproto PDS sends `RateLimit-Reset` as a Unix time in seconds; the IETF
 * draft uses delay seconds, so a small value is read as a delay. Past times give 0.
 */
export function retryDelayMs(headers: ResponseHeaders, nowMs: number): number | undefined {
  const retryAfter = headers.get('retry-after')?.trim();
  if (retryAfter) {
    if (/^\d+$/.test(retryAfter)) return Number(retryAfter) * 1000;
    const at = Date.parse(retryAfter);
    if (!Number.isNaN(at)) return Math.max(0, at - nowMs);
  }
  const reset = headers.get('ratelimit-reset')?.trim();
  if (reset && /^\d+$/.test(reset)) {
    const n = Number(reset);
    return n >= 1_000_000_000 ? Math.max(0, n * 1000 - nowMs) : n * 1000;
  }
  return undefined;
}

/** Where a redirect leads. A hostile server chooses `location`: anything URL refuses is a named error. */
function redirectTarget(location: string, from: URL, shown: string): URL {
  const target = URL.parse(location, from.href);
  if (target === null) throw new BadRedirectError(shown, location);
  return target;
}

/** The body's decoded length, when the server announced it and sent it unencoded. */
function announcedLength(headers: ResponseHeaders): number | undefined {
  const encoding = headers.get('content-encoding');
  if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') return undefined;
  const raw = headers.get('content-length');
  if (raw === null || !/^\d+$/.test(raw.trim())) return undefined;
  return Number(raw.trim());
}

function requestFailure(err: unknown, callerSignal: AbortSignal | undefined, own: OwnAbort | undefined, url: string): unknown {
  if (callerSignal?.aborted) return callerSignal.reason;
  if (own !== undefined) return own.code === 'EDEADLINE' ? new DeadlineError(url, own.message, { cause: err }) : new TransportError(own.code, url, own.message, { cause: err });
  if (err instanceof NetError) return err; // ForbiddenAddressError, TransportError from the guard
  const code = errorCode(err);
  // fetch fails with a TypeError around the cause; the pinned request with the socket's error.
  if (!(err instanceof TypeError) && code === 'EUNKNOWN') return err; // a bug
  const cause = (err as { cause?: unknown }).cause;
  const detail = cause instanceof Error ? cause.message : (err as Error).message;
  return new TransportError(code, url, `request failed: ${detail}`, { cause: err });
}
