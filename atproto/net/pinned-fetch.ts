/**
 * A GET that connects only to addresses the caller already checked. The built-in fetch
 * resolves the host name again when it connects, so a name with a short TTL could answer the
 * address guard with a public address and the connection with a private one (DNS rebinding);
 * node:http(s) takes a `lookup` hook, through which the connection gets exactly the checked
 * addresses. TLS still verifies the certificate against the host name (SNI included).
 *
 * Lean on purpose: a small repo's backfill is two of these, and a web `Response` (its Headers,
 * a web stream over the socket, an AbortSignal per request) cost more CPU than the request
 * itself. The answer is the node response as it is: its headers, and its body as a node stream
 * (decoded from gzip/deflate, as fetch does). `abort` closes the connection. Failures reject
 * with the socket's error (its `code` intact).
 */
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import { createGunzip, createInflate } from 'node:zlib';
import type { LookupAddress } from './address-guard.ts';

// Not `import http from 'node:http'`: importing it as an ES module reads every export, and three of
// them (WebSocket, CloseEvent, MessageEvent) load Node's fetch implementation (undici), ~9 MB a
// process that never calls fetch would hold for its life.
const http = process.getBuiltinModule('node:http');

const NULL_BODY = new Set([204, 205, 304]);
const ignore = () => {};

/**
 * Connections are kept alive and reused per host (name and port), as fetch's pool does; an idle
 * one is closed after 5 s (what node's global agent does), before most servers close it.
 */
const httpAgent = new http.Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5000 });
const httpsAgent = new https.Agent({ keepAlive: true, scheduling: 'lifo', timeout: 5000 });

export interface PinnedGetInit {
  headers: Record<string, string>;
  /** The checked addresses of `url`'s host; the connection goes to one of them and nowhere else. */
  addresses: LookupAddress[];
  /** Cancels the request (rejects with the signal's reason). Optional: nothing is set up without one. */
  signal?: AbortSignal | undefined;
}

/** The response: status, headers and body as they came. */
export interface PinnedResponse {
  status: number;
  /** Node's headers: names lower-cased; repeated headers joined (`set-cookie` an array). */
  headers: IncomingHttpHeaders;
  /** The decoded body; null for 204, 205 and 304. */
  body: Readable | null;
  /** Closes the connection (the body then fails with `reason`). Safe to call at any time, more than once. */
  abort(reason: Error): void;
}

/** A request in flight that has no response yet, to give up on (a timeout, the caller's abort). */
export interface PinnedRequest {
  readonly response: Promise<PinnedResponse>;
  abort(reason: Error): void;
}

/**
 * A kept-alive socket the server closed while it sat idle fails the next request on it with a
 * reset before any response; such a request never reached the server, so it is sent once more
 * on a fresh connection (Node's `req.reusedSocket` rule). A reset on a fresh socket, or after
 * the response began, is the caller's to see.
 */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** GETs `url` from one of `addresses`; resolves once the response headers arrive. */
export function pinnedGet(url: URL, init: PinnedGetInit): Promise<PinnedResponse> {
  return startPinnedGet(url, init).response;
}

/** `pinnedGet`, with a handle to give up before the headers arrive. */
export function startPinnedGet(url: URL, init: PinnedGetInit): PinnedRequest {
  let current: PinnedRequest | undefined;
  let abortedWith: Error | undefined;
  const { signal } = init;
  const onAbort = () => current?.abort(signal!.reason as Error);
  if (signal) {
    if (signal.aborted) return { response: Promise.reject(signal.reason as Error), abort: () => {} };
    signal.addEventListener('abort', onAbort, { once: true });
  }
  const response = (async () => {
    try {
      current = once(url, init);
      try {
        return await current.response;
      } catch (err) {
        if (!(err as { staleSocket?: boolean }).staleSocket || abortedWith || signal?.aborted) throw err;
        current = once(url, init);
        return await current.response;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  })();
  return {
    response,
    abort: (reason) => {
      abortedWith ??= reason;
      current?.abort(reason);
    },
  };
}

function once(url: URL, init: PinnedGetInit): PinnedRequest {
  const pinned: LookupFunction = (_hostname, options, callback) => {
    const family = typeof options === 'object' && options !== null ? (options as { family?: number }).family : undefined;
    const usable = init.addresses.filter((a) => !family || a.family === family);
    if ((options as { all?: boolean } | undefined)?.all) {
      (callback as unknown as (err: Error | null, addresses: LookupAddress[]) => void)(null, usable);
      return;
    }
    const first = usable[0];
    if (first === undefined) callback(Object.assign(new Error(`no checked ${family === 6 ? 'IPv6' : 'IPv4'} address for ${url.hostname}`), { code: 'ENOTFOUND' }), '', 0);
    else callback(null, first.address, first.family);
  };
  const tls = url.protocol === 'https:';
  let req: ClientRequest;
  let res: IncomingMessage | undefined;
  let body: Readable | undefined;
  let aborted: Error | undefined;
  const abort = (reason: Error) => {
    if (aborted) return;
    aborted = reason;
    // The body (and a decoder behind it) fails with the reason; the socket is not reused.
    if (body && body !== res) body.destroy(reason);
    res?.destroy(reason);
    req.destroy(reason);
  };
  const response = new Promise<PinnedResponse>((resolve, reject) => {
    let responded = false;
    const options: https.RequestOptions = {
      protocol: url.protocol,
      hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers: init.headers,
      lookup: pinned,
      agent: tls ? httpsAgent : httpAgent,
    };
    req = (tls ? https : http).request(options, (incoming) => {
      responded = true;
      res = incoming;
      const status = incoming.statusCode ?? 0;
      if (status < 200 || status > 599) {
        incoming.destroy();
        reject(Object.assign(new Error(`unexpected HTTP status ${status}`), { code: 'EPROTO' }));
        return;
      }
      if (NULL_BODY.has(status)) {
        incoming.resume();
        resolve({ status, headers: incoming.headers, body: null, abort });
        return;
      }
      const encoding = (incoming.headers['content-encoding'] ?? '').trim().toLowerCase();
      body = incoming;
      if (encoding === 'gzip' || encoding === 'x-gzip' || encoding === 'deflate') {
        const decoder = encoding === 'deflate' ? createInflate() : createGunzip();
        // A reset in the middle must reach the reader as the socket's error, not as a
        // truncated compressed stream only.
        incoming.on('error', (err) => decoder.destroy(err));
        body = incoming.pipe(decoder);
        decoder.on('error', ignore);
      }
      // The reader learns of errors from the stream itself (`errored`); aborting one that nobody
      // is reading at that moment must not be an uncaught 'error' event.
      incoming.on('error', ignore);
      resolve({ status, headers: incoming.headers, body, abort });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (aborted) return reject(aborted);
      if (req.reusedSocket && !responded && err.code !== undefined && STALE_SOCKET_CODES.has(err.code)) Object.assign(err, { staleSocket: true });
      reject(err);
    });
    req.end();
  });
  return { response, abort };
}
