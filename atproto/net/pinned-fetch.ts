/**
 * A GET that connects only to addresses the caller already checked. The built-in fetch
 * resolves the host name again when it connects, so a name with a short TTL could answer the
 * address guard with a public address and the connection with a private one (DNS rebinding);
 * node:http(s) takes a `lookup` hook, through which the connection gets exactly the checked
 * addresses. TLS still verifies the certificate against the host name (SNI included).
 *
 * Returns a web `Response` (body decoded from gzip/deflate, as fetch does) so the rest of the
 * package reads it the same way; failures reject with the socket's error (its `code` intact).
 */
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import { createGunzip, createInflate } from 'node:zlib';
import type { LookupAddress } from './address-guard.ts';

const NULL_BODY = new Set([204, 205, 304]);

export interface PinnedGetInit {
  headers: Record<string, string>;
  signal: AbortSignal;
  /** The checked addresses of `url`'s host; the connection goes to one of them and nowhere else. */
  addresses: LookupAddress[];
}

/**
 * A kept-alive socket the server closed while it sat idle fails the next request on it with a
 * reset before any response; such a request never reached the server, so it is sent once more
 * on a fresh connection (Node's `req.reusedSocket` rule). A reset on a fresh socket, or after
 * the response began, is the caller's to see.
 */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

export async function pinnedGet(url: URL, init: PinnedGetInit): Promise<Response> {
  try {
    return await pinnedGetOnce(url, init);
  } catch (err) {
    if (!(err as { staleSocket?: boolean }).staleSocket || init.signal.aborted) throw err;
    return pinnedGetOnce(url, init);
  }
}

function pinnedGetOnce(url: URL, init: PinnedGetInit): Promise<Response> {
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
  const client = url.protocol === 'https:' ? https : http;
  return new Promise<Response>((resolve, reject) => {
    let responded = false;
    const req = client.request(url, { method: 'GET', headers: init.headers, lookup: pinned, signal: init.signal }, (res) => {
      responded = true;
      const status = res.statusCode ?? 0;
      if (status < 200 || status > 599) {
        res.destroy();
        reject(Object.assign(new Error(`unexpected HTTP status ${status}`), { code: 'EPROTO' }));
        return;
      }
      const headers = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
      }
      if (NULL_BODY.has(status)) {
        res.resume();
        resolve(new Response(null, { status, headers }));
        return;
      }
      const encoding = (res.headers['content-encoding'] ?? '').trim().toLowerCase();
      let body: Readable = res;
      if (encoding === 'gzip' || encoding === 'x-gzip' || encoding === 'deflate') {
        const decoder = encoding === 'deflate' ? createInflate() : createGunzip();
        // A reset in the middle must reach the reader as the socket's error, not as a
        // truncated compressed stream only.
        res.on('error', (err) => decoder.destroy(err));
        body = res.pipe(decoder);
      }
      try {
        resolve(new Response(Readable.toWeb(body) as ReadableStream<Uint8Array>, { status, headers }));
      } catch (err) {
        res.destroy();
        reject(err);
      }
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (req.reusedSocket && !responded && err.code !== undefined && STALE_SOCKET_CODES.has(err.code)) Object.assign(err, { staleSocket: true });
      reject(err);
    });
    req.end();
  });
}
