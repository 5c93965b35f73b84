/**
 * A GET that connects only to addresses the caller already checked. The built-in fetch
 * resolves the host name again when it connects, so a name with a short TTL could answer the
 * address guard with a public address and the connection with a private one (DNS rebinding);
 * here the socket is opened to a checked address itself, and a kept-alive socket is reused only
 * when its peer is one of the addresses checked for the new request. TLS verifies the
 * certificate against the host name (SNI included).
 *
 * An HTTP/1.1 client of its own, on node:net and node:tls: a small repo's backfill is two GETs,
 * and node:http's client (its agent, ClientRequest, header objects and parser, per request) cost
 * about five times the CPU of the exchange itself (bench/e2e.ts). What this one does: GET only,
 * keep-alive connections pooled per host (`scheme://host:port`), reused most recently used first
 * and closed after 5 s idle; the response's status line and headers parsed under a 16 KiB cap
 * (node's default); the body delimited by Content-Length, chunked transfer coding, or the
 * connection's end; gzip and deflate decoded (as fetch does). The answer is the status, node-style
 * headers (names lower-cased; repeated ones joined, `set-cookie` an array) and the body as a node
 * stream. `abort` closes the connection. Failures reject with the socket's error (its `code`
 * intact) or a parse error (`code` HPE_…).
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import { createGunzip, createInflate } from 'node:zlib';
import type { LookupAddress } from './address-guard.ts';
import { type Conn, type Owner, connect, release, takeIdle } from './connection-pool.ts';
import { WireBody } from './wire-body.ts';

const NULL_BODY = new Set([204, 205, 304]);
const ignore = () => {};

const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/;
/** A header name (RFC 9110 token). */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A control character other than HTAB (NUL, a lone CR or LF, DEL): never in a field value (RFC 9110 §5.5). */
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Interim (1xx) responses taken before the final one; a server that sends more is refused. */
const MAX_INTERIM = 16;
/** Cap on a response's status line and headers (node's `maxHeaderSize`). */
export const MAX_HEADER_BYTES = 16 * 1024;

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
  /**
   * The decoded body; null for 204, 205 and 304. As it came off the wire (a WireBody), or
   * through the gzip/deflate decoder (a node stream).
   */
  body: WireBody | Readable | null;
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
 * reset (or a clean close) before any response; such a request never reached the server, so it
 * is sent once more on a fresh connection (node's `req.reusedSocket` rule). A reset on a fresh
 * socket, or after the response began, is the caller's to see.
 */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** GETs `url` from one of `addresses`; resolves once the response headers arrive. */
export function pinnedGet(url: URL, init: PinnedGetInit): Promise<PinnedResponse> {
  return startPinnedGet(url, init).response;
}

/** `pinnedGet`, with a handle to give up before the headers arrive. */
export function startPinnedGet(url: URL, init: PinnedGetInit): PinnedRequest {
  const { signal } = init;
  if (signal?.aborted) return { response: Promise.reject(signal.reason as Error), abort: () => {} };
  let current = exchange(url, init, true);
  let abortedWith: Error | undefined;
  const onAbort = () => current.abort(signal!.reason as Error);
  signal?.addEventListener('abort', onAbort, { once: true });
  const response = current.response.then(
    (r) => r,
    (err: unknown) => {
      if (!(err as { staleSocket?: boolean }).staleSocket || abortedWith || signal?.aborted) throw err;
      current = exchange(url, init, false);
      return current.response;
    },
  );
  if (signal) {
    const off = () => signal.removeEventListener('abort', onAbort);
    response.then(off, off);
  }
  return {
    response,
    abort: (reason) => {
      abortedWith ??= reason;
      current.abort(reason);
    },
  };
}

function parseError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** The request's bytes: the headers are the caller's own, but a CR or LF in one would split the request. */
function requestHead(url: URL, headers: Record<string, string>): string {
  let head = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n`;
  for (const name in headers) {
    const value = headers[name]!;
    if (/[\r\n\0]/.test(name) || /[\r\n\0]/.test(value)) throw parseError('ERR_INVALID_CHAR', `invalid character in header ${JSON.stringify(name)}`);
    head += `${name}: ${value}\r\n`;
  }
  return `${head}Connection: keep-alive\r\n\r\n`;
}

/** One request on one connection (a pooled one when `mayReuse`). */
function exchange(url: URL, init: PinnedGetInit, mayReuse: boolean): PinnedRequest {
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  const key = `${url.protocol}//${url.host}`;
  let head: string;
  try {
    head = requestHead(url, init.headers);
  } catch (err) {
    return { response: Promise.reject(err as Error), abort: ignore };
  }

  let conn: Conn | undefined;
  let reused = false;
  let cancelConnect: (() => void) | undefined;
  let aborted: Error | undefined;
  let settled = false;
  let resolveRes!: (r: PinnedResponse) => void;
  let rejectRes!: (err: Error) => void;
  const response = new Promise<PinnedResponse>((res, rej) => {
    resolveRes = res;
    rejectRes = rej;
  });

  // Parser state.
  let buf: Buffer | undefined; // bytes not yet consumed (headers, or a chunked body's framing)
  let status = 0;
  /** Body framing: 'length' (remaining bytes), 'chunked', 'close' (until the end), or done. */
  let mode: 'head' | 'length' | 'chunked' | 'close' | 'done' = 'head';
  let remaining = 0;
  let chunkState: 'size' | 'data' | 'data-crlf' | 'trailers' = 'size';
  let keepAlive = true;
  /** Where the body's bytes go as they come off the wire: the WireBody the caller reads, or the decoder in front of it. */
  let sink: { push(chunk: Buffer): void; end(): void; destroy(err: Error): void; readonly destroyed: boolean } | undefined;
  let responded = false;
  let interim = 0; // interim (1xx) responses taken so far

  const fail = (err: Error) => {
    if (mode === 'done' && !aborted) return;
    mode = 'done';
    detach();
    conn?.socket.destroy();
    if (!settled) {
      settled = true;
      rejectRes(aborted ?? err);
    } else if (sink && !sink.destroyed) {
      sink.destroy(aborted ?? err);
    }
  };
  const abort = (reason: Error) => {
    if (aborted) return;
    aborted = reason;
    cancelConnect?.();
    if (mode !== 'done') fail(reason);
    else sink?.destroy(reason);
  };

  const onData = (chunk: Buffer) => {
    try {
      feed(chunk);
    } catch (err) {
      fail(err as Error);
    }
  };
  const onEnd = (error?: NodeJS.ErrnoException) => {
    if (error) {
      if (reused && !responded && mode === 'head' && error.code !== undefined && STALE_SOCKET_CODES.has(error.code)) Object.assign(error, { staleSocket: true });
      fail(error);
      return;
    }
    if (mode === 'close') {
      finishBody(false);
      return;
    }
    if (mode === 'done') return;
    const err = parseError('ECONNRESET', mode === 'head' ? 'socket hang up' : 'connection closed before the end of the body');
    if (reused && !responded && mode === 'head') Object.assign(err, { staleSocket: true });
    fail(err);
  };
  const owner: Owner = { onData, onEnd };
  /** The connection's events stop coming here. */
  const detach = () => {
    if (conn?.owner === owner) conn.owner = undefined;
  };

  const finishBody = (reusable: boolean) => {
    mode = 'done';
    detach();
    const s = conn!.socket;
    if (reusable && keepAlive && !aborted && s.readable && s.writable) {
      if (s.isPaused()) s.resume();
      release(conn!);
    } else {
      s.destroy();
    }
    sink?.end();
  };

  const deliver = (data: Buffer) => {
    if (data.length === 0) return;
    sink!.push(data);
  };

  /** Consumes body bytes per the framing; returns leftover bytes (only past a complete body). */
  const bodyBytes = (data: Buffer): void => {
    if (mode === 'close') {
      deliver(data);
      return;
    }
    if (mode === 'length') {
      if (data.length < remaining) {
        remaining -= data.length;
        deliver(data);
        return;
      }
      deliver(data.length === remaining ? data : data.subarray(0, remaining));
      // Bytes past the body were not asked for: the connection is not reused.
      finishBody(data.length === remaining);
      return;
    }
    // chunked
    let at = 0;
    let rest = buf && buf.length > 0 ? Buffer.concat([buf, data]) : data;
    buf = undefined;
    while (at < rest.length) {
      if (chunkState === 'data') {
        const n = Math.min(remaining, rest.length - at);
        deliver(rest.subarray(at, at + n));
        at += n;
        remaining -= n;
        if (remaining === 0) chunkState = 'data-crlf';
        continue;
      }
      const eol = rest.indexOf('\r\n', at, 'latin1');
      if (eol < 0) {
        if (rest.length - at > MAX_HEADER_BYTES) throw parseError('HPE_HEADER_OVERFLOW', 'chunk framing too long');
        buf = rest.subarray(at);
        return;
      }
      const line = rest.toString('latin1', at, eol);
      at = eol + 2;
      if (chunkState === 'data-crlf') {
        if (line !== '') throw parseError('HPE_STRICT', 'missing CRLF after a chunk');
        chunkState = 'size';
      } else if (chunkState === 'size') {
        const semi = line.indexOf(';');
        const hex = (semi < 0 ? line : line.slice(0, semi)).trim();
        if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw parseError('HPE_INVALID_CHUNK_SIZE', 'invalid chunk size');
        remaining = parseInt(hex, 16);
        chunkState = remaining === 0 ? 'trailers' : 'data';
      } else {
        // trailers: ignored, up to the empty line that ends the message
        if (line === '') {
          finishBody(at === rest.length);
          return;
        }
      }
    }
  };

  const feed = (chunk: Buffer) => {
    if (mode === 'done') return;
    if (mode !== 'head') {
      bodyBytes(chunk);
      return;
    }
    responded = true;
    const data = buf ? Buffer.concat([buf, chunk]) : chunk;
    buf = undefined;
    const end = data.indexOf('\r\n\r\n', 0, 'latin1');
    if (end < 0) {
      if (data.length > MAX_HEADER_BYTES) throw parseError('HPE_HEADER_OVERFLOW', `response headers larger than ${MAX_HEADER_BYTES} bytes`);
      buf = data;
      return;
    }
    if (end > MAX_HEADER_BYTES) throw parseError('HPE_HEADER_OVERFLOW', `response headers larger than ${MAX_HEADER_BYTES} bytes`);
    const text = data.toString('latin1', 0, end);
    const rest = data.subarray(end + 4);
    const statusEnd = text.indexOf('\r\n');
    const m = STATUS_LINE.exec(statusEnd < 0 ? text : text.slice(0, statusEnd));
    if (!m) throw parseError('HPE_INVALID_CONSTANT', 'malformed status line');
    status = Number(m[2]);
    if (m[1] === '0') keepAlive = false;
    // No prototype: a header named `constructor` or `__proto__` is a header like any other.
    const h = Object.create(null) as IncomingHttpHeaders;
    for (let at = statusEnd < 0 ? text.length : statusEnd + 2; at < text.length; ) {
      let eol = text.indexOf('\r\n', at);
      if (eol < 0) eol = text.length;
      const colon = text.indexOf(':', at);
      if (colon <= at || colon > eol) throw parseError('HPE_INVALID_HEADER_TOKEN', 'malformed header line');
      const rawName = text.slice(at, colon);
      if (!TOKEN.test(rawName)) throw parseError('HPE_INVALID_HEADER_TOKEN', 'malformed header line');
      const name = rawName.toLowerCase();
      const value = text.slice(colon + 1, eol).trim();
      if (CONTROL.test(value)) throw parseError('HPE_INVALID_HEADER_TOKEN', `a control character in the value of header ${name}`);
      at = eol + 2;
      const had = h[name];
      if (name === 'set-cookie') (h['set-cookie'] ??= []).push(value);
      else if (had === undefined) h[name] = value;
      else if (name === 'content-length') {
        if (had !== value) throw parseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'conflicting Content-Length headers');
      } else h[name] = `${had as string}, ${value}`;
    }
    if (status >= 100 && status < 200 && status !== 101) {
      // An interim response (100 Continue, 103 Early Hints): the real one follows.
      if (++interim > MAX_INTERIM) throw parseError('EPROTO', `more than ${MAX_INTERIM} interim (1xx) responses`);
      responded = false;
      if (rest.length > 0) feed(rest);
      return;
    }
    if (status < 200 || status > 599) throw parseError('EPROTO', `unexpected HTTP status ${status}`);
    const connection = (h.connection as string | undefined)?.toLowerCase();
    if (connection !== undefined && /(^|,)\s*close\s*(,|$)/.test(connection)) keepAlive = false;
    if (m[1] === '0' && !(connection !== undefined && /(^|,)\s*keep-alive\s*(,|$)/.test(connection))) keepAlive = false;

    const te = (h['transfer-encoding'] as string | undefined)?.toLowerCase();
    const cl = h['content-length'] as string | undefined;
    if (NULL_BODY.has(status)) {
      mode = 'length';
      remaining = 0;
    } else if (te !== undefined) {
      // Only chunked is a transfer coding servers of this field send; another (gzip, a list) would
      // reach the reader still coded. A message with both framings is what request smuggling and
      // response splitting look like (RFC 9112 §6.1): refused, as node's parser refuses it.
      if (cl !== undefined) throw parseError('HPE_UNEXPECTED_CONTENT_LENGTH', 'both Transfer-Encoding and Content-Length');
      if (te.trim() !== 'chunked') throw parseError('HPE_INVALID_TRANSFER_ENCODING', `unsupported Transfer-Encoding ${JSON.stringify(te.slice(0, 100))}`);
      mode = 'chunked';
    } else if (cl !== undefined) {
      if (!/^\d{1,15}$/.test(cl)) throw parseError('HPE_INVALID_CONTENT_LENGTH', 'invalid Content-Length');
      mode = 'length';
      remaining = Number(cl);
    } else {
      mode = 'close';
      keepAlive = false;
    }

    if (NULL_BODY.has(status)) {
      finishBody(rest.length === 0);
      settled = true;
      resolveRes({ status, headers: h, body: null, abort });
      return;
    }
    // The socket is paused while the reader falls behind, and resumed as it catches up (not once
    // the body is complete: the socket may then serve another request).
    const pause = () => mode !== 'done' && conn!.socket.pause();
    const resume = () => mode !== 'done' && conn!.socket.resume();
    let body: WireBody | Readable;
    const encoding = ((h['content-encoding'] as string | undefined) ?? '').trim().toLowerCase();
    if (encoding === 'gzip' || encoding === 'x-gzip' || encoding === 'deflate') {
      const decoder = encoding === 'deflate' ? createInflate() : createGunzip();
      decoder.on('error', ignore);
      decoder.on('drain', resume);
      body = decoder;
      // A reset in the middle reaches the reader as the socket's error, not as a truncated
      // compressed stream only.
      sink = {
        push: (chunk) => void (decoder.write(chunk) || pause()),
        end: () => void decoder.end(),
        destroy: (err) => void decoder.destroy(err),
        get destroyed() {
          return decoder.destroyed;
        },
      };
    } else {
      body = sink = new WireBody({ pause, resume });
    }
    settled = true;
    resolveRes({ status, headers: h, body, abort });
    if (mode === 'length' && remaining === 0) finishBody(rest.length === 0);
    else if (rest.length > 0) bodyBytes(rest);
  };

  const start = (c: Conn) => {
    cancelConnect = undefined;
    conn = c;
    if (aborted) {
      detach();
      c.socket.destroy();
      return;
    }
    c.socket.write(head, 'latin1');
  };

  const pooled = mayReuse ? takeIdle(key, init.addresses, owner) : undefined;
  if (pooled) {
    reused = true;
    start(pooled);
  } else {
    cancelConnect = connect(url, hostname, port, init.addresses, key, owner, start, (err) => {
      cancelConnect = undefined;
      fail(err);
    });
  }
  return { response, abort };
}
