import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ForbiddenAddressError,
  RateLimitedError,
  RepoGoneError,
  RepoNotFoundError,
  ResponseTooLargeError,
  TransportError,
  XrpcError,
  outcomeOf,
} from './errors.ts';
import { Politeness } from './politeness.ts';
import { getBlob, getRepo, getRepoBytes, getRepoStatus, listAllRepos, listRepos, openRepo } from './sync.ts';

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz';
const servers: http.Server[] = [];

/** A fake PDS on 127.0.0.1, closed after each test. */
async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => unknown): Promise<string> {
  const server = http.createServer((req, res) => {
    Promise.resolve(handler(req, res)).catch((err: unknown) => res.destroy(err as Error));
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

const local = { allowPrivate: true, timeoutMs: 5000 };

function xrpcError(res: http.ServerResponse, status: number, error: string, message?: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify({ error, message }));
}

async function caught(p: Promise<unknown> | (() => Promise<unknown>)): Promise<unknown> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** Writes `total` bytes in `chunk`-sized pieces, waiting for the socket to drain; resolves to bytes written. */
async function writeSlowly(res: http.ServerResponse, total: number, chunk = 64 * 1024): Promise<number> {
  let sent = 0;
  const piece = Buffer.alloc(chunk, 7);
  const closed = new Promise<void>((r) => res.once('close', r));
  while (sent < total && !res.destroyed) {
    const n = Math.min(chunk, total - sent);
    const ok = res.write(n === chunk ? piece : piece.subarray(0, n));
    sent += n;
    if (!ok) await Promise.race([new Promise<void>((r) => res.once('drain', r)), closed]);
  }
  return sent;
}

describe('getRepo', () => {
  it('streams a large CAR body in chunks, with the did, since and the accepted encodings on the request', async () => {
    const body = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body.writeUInt32BE(i, i);
    let seen: http.IncomingMessage | undefined;
    const pds = await serve(async (req, res) => {
      seen = req;
      res.writeHead(200, { 'content-type': 'application/vnd.ipld.car', 'content-length': String(body.length) });
      for (let at = 0; at < body.length; at += 256 * 1024) {
        if (!res.write(body.subarray(at, at + 256 * 1024))) await once(res, 'drain');
      }
      res.end();
    });
    let chunks = 0;
    let progress = 0;
    const hash = createHash('sha256');
    for await (const c of getRepo(pds, DID, { ...local, maxBytes: 8 * 1024 * 1024, since: '3kabc', onBytes: (n) => (progress += n) })) {
      chunks++;
      hash.update(c);
    }
    expect(chunks).toBeGreaterThan(1);
    expect(progress).toBe(body.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(body).digest('hex'));
    const url = new URL(seen!.url!, pds);
    expect(url.pathname).toBe('/xrpc/com.atproto.sync.getRepo');
    expect(url.searchParams.get('did')).toBe(DID);
    expect(url.searchParams.get('since')).toBe('3kabc');
    expect(seen!.headers['accept-encoding']).toMatch(/gzip/);
    expect(seen!.headers['accept-encoding']).toMatch(/deflate/);
  });

  it('aborts as soon as the cap is passed, without downloading the rest', async () => {
    const total = 64 * 1024 * 1024;
    let sentWhenClosed: Promise<number> | undefined;
    const pds = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/vnd.ipld.car' }); // chunked: no length announced
      sentWhenClosed = writeSlowly(res, total);
    });
    const politeness = new Politeness({ concurrency: 1 });
    const cap = 256 * 1024;
    const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: cap, politeness }));
    expect(err).toBeInstanceOf(ResponseTooLargeError);
    expect((err as ResponseTooLargeError).limit).toBe(cap);
    expect((err as Error).message).toContain(`cap of ${cap} bytes`);
    expect((err as Error).message).toContain('/xrpc/com.atproto.sync.getRepo');
    expect(outcomeOf(err).kind).toBe('error');
    // The server saw the connection close long before it could send everything.
    // (About 4 MiB of socket buffers fill on loopback before the close is seen.)
    const sent = await sentWhenClosed!;
    expect(sent).toBeLessThan(16 * 1024 * 1024);
    expect(politeness.stats(new URL(pds).host).active).toBe(0);
  });

  it('refuses a body whose announced length passes the cap before reading it', async () => {
    const pds = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(50 * 1024 * 1024) });
      res.write(Buffer.alloc(1024));
    });
    const err = await caught(openRepo(pds, DID, { ...local, maxBytes: 1024 * 1024 }));
    expect(err).toBeInstanceOf(ResponseTooLargeError);
    expect((err as ResponseTooLargeError).seen).toBe(50 * 1024 * 1024);
  });

  it('decodes a gzip body and counts the decoded bytes against the cap', async () => {
    const plain = Buffer.alloc(2 * 1024 * 1024, 'atproto ');
    const gz = gzipSync(plain);
    expect(gz.length).toBeLessThan(64 * 1024);
    const pds = await serve((req, res) => {
      expect(req.headers['accept-encoding']).toMatch(/gzip/);
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(gz.length) });
      res.end(gz);
    });
    const body = await openRepo(pds, DID, { ...local, maxBytes: 4 * 1024 * 1024 });
    expect(body.contentEncoding).toBe('gzip');
    expect(body.contentLength).toBeUndefined(); // the wire length says nothing about the decoded size
    const bytes = await body.bytes();
    expect(body.bytesRead).toBe(plain.length);
    expect(Buffer.from(bytes).equals(plain)).toBe(true);
    // 2 MiB decoded from ~10 KB on the wire: a 1 MiB cap must trip.
    const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 1024 * 1024 }));
    expect(err).toBeInstanceOf(ResponseTooLargeError);
  });

  it('maps a connection reset in the middle of the body to TransportError', async () => {
    const pds = await serve((req, res) => {
      res.writeHead(200, { 'content-length': String(1024 * 1024) });
      res.write(Buffer.alloc(100 * 1024));
      setTimeout(() => req.socket.destroy(), 20);
    });
    const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 10 * 1024 * 1024 }));
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).message).toMatch(/middle of the body after \d+ bytes/);
    expect(['UND_ERR_SOCKET', 'ECONNRESET']).toContain((err as TransportError).code);
    expect(outcomeOf(err)).toMatchObject({ kind: 'transport' });
  });

  it('maps a gzip stream cut short to TransportError', async () => {
    const gz = gzipSync(Buffer.alloc(1024 * 1024, 'x'));
    const pds = await serve((req, res) => {
      res.writeHead(200, { 'content-encoding': 'gzip' });
      res.write(gz.subarray(0, gz.length >> 1));
      setTimeout(() => req.socket.destroy(), 20);
    });
    const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 10 * 1024 * 1024 }));
    expect(err).toBeInstanceOf(TransportError);
  });

  it('times out a server that never answers, and one that stalls in the body', async () => {
    const silent = await serve(() => {});
    const t0 = performance.now();
    const err = await caught(getRepoBytes(silent, DID, { allowPrivate: true, timeoutMs: 200, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).code).toBe('ETIMEDOUT');
    expect(performance.now() - t0).toBeLessThan(2000);

    const stalls = await serve((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(1000));
    });
    const err2 = await caught(getRepoBytes(stalls, DID, { allowPrivate: true, timeoutMs: 5000, idleTimeoutMs: 200, maxBytes: 1 << 20 }));
    expect(err2).toBeInstanceOf(TransportError);
    expect((err2 as TransportError).code).toBe('ETIMEDOUT');
    expect((err2 as Error).message).toMatch(/no body data for 200 ms after 1000 bytes/);
  });

  it('rethrows the caller’s abort reason unchanged, not as a transport failure', async () => {
    const pds = await serve((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(1000));
    });
    const ac = new AbortController();
    const reason = new Error('activity cancelled');
    setTimeout(() => ac.abort(reason), 100);
    expect(await caught(getRepoBytes(pds, DID, { ...local, signal: ac.signal, maxBytes: 1 << 20 }))).toBe(reason);
  });

  it('closes the connection and frees the slot when the reader stops early', async () => {
    let closed: Promise<number> | undefined;
    const pds = await serve((_req, res) => {
      res.writeHead(200);
      closed = writeSlowly(res, 64 * 1024 * 1024);
    });
    const politeness = new Politeness({ concurrency: 1 });
    for await (const _ of getRepo(pds, DID, { ...local, maxBytes: 1 << 30, politeness })) break;
    expect(await closed!).toBeLessThan(32 * 1024 * 1024);
    expect(politeness.stats(new URL(pds).host)).toEqual({ active: 0, waiting: 0 });
  });

  it('classifies XRPC errors by name', async () => {
    const pds = await serve((req, res) => {
      const did = new URL(req.url!, 'http://x').searchParams.get('did')!;
      const name = did.slice('did:plc:'.length);
      if (name === 'server') {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<html>bad gateway</html>');
        return;
      }
      xrpcError(res, 400, name, `account ${name}`);
    });
    const attempt = (name: string) => caught(getRepoBytes(pds, `did:plc:${name}`, { ...local, maxBytes: 1024 }));

    for (const [name, status] of [
      ['RepoDeactivated', 'deactivated'],
      ['RepoTakendown', 'takendown'],
      ['RepoSuspended', 'suspended'],
    ] as const) {
      const err = await attempt(name);
      expect(err).toBeInstanceOf(RepoGoneError);
      expect((err as RepoGoneError).status).toBe(status);
      expect(outcomeOf(err)).toMatchObject({ kind: 'gone', status });
    }
    const nf = await attempt('RepoNotFound');
    expect(nf).toBeInstanceOf(RepoNotFoundError);
    expect(outcomeOf(nf).kind).toBe('not-found');
    expect((nf as Error).message).toMatch(/com\.atproto\.sync\.getRepo on 127\.0\.0\.1:\d+: HTTP 400 RepoNotFound: account RepoNotFound/);

    const other = await attempt('InvalidRequest');
    expect(other).toBeInstanceOf(XrpcError);
    expect(other).not.toBeInstanceOf(RepoGoneError);
    expect((other as XrpcError).error).toBe('InvalidRequest');
    expect(outcomeOf(other).kind).toBe('error');

    const bad = await attempt('server');
    expect(bad).toBeInstanceOf(XrpcError);
    expect((bad as XrpcError).httpStatus).toBe(502);
    expect((bad as XrpcError).error).toBe('HTTP 502');
    expect(outcomeOf(bad).kind).toBe('error');
  });

  it('turns 429 into RateLimitedError with the delay from Retry-After or RateLimit-Reset', async () => {
    let headers: Record<string, string> = {};
    const pds = await serve((_req, res) => xrpcError(res, 429, 'RateLimitExceeded', 'slow down', headers));
    const attempt = async () => (await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 1024 }))) as RateLimitedError;

    headers = { 'retry-after': '2' };
    let err = await attempt();
    expect(err).toBeInstanceOf(RateLimitedError);
    expect(err.retryAfterMs).toBe(2000);
    expect(err.host).toBe(new URL(pds).host);
    expect(outcomeOf(err)).toEqual({ kind: 'rate-limited', message: err.message, host: err.host, retryAfterMs: 2000 });

    headers = { 'ratelimit-reset': String(Math.floor(Date.now() / 1000) + 3), 'ratelimit-remaining': '0' };
    err = await attempt();
    expect(err.retryAfterMs).toBeGreaterThan(1000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(3000);

    headers = { 'retry-after': new Date(Date.now() + 10_000).toUTCString() };
    err = await attempt();
    expect(err.retryAfterMs).toBeGreaterThan(8000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(10_000);

    headers = {};
    err = await attempt();
    expect(err.retryAfterMs).toBeUndefined();
    expect(err.message).toMatch(/no usable Retry-After/);
  });

  it('refuses a PDS on a private address unless allowed, without sending it anything', async () => {
    let requests = 0;
    const pds = await serve((_req, res) => {
      requests++;
      res.end();
    });
    const err = await caught(getRepoBytes(pds, DID, { allowPrivate: false, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(ForbiddenAddressError);
    expect(requests).toBe(0);
  });

  it('checks every redirect hop against the guard', async () => {
    const pds = await serve((req, res) => {
      res.writeHead(302, { location: `http://127.0.0.1:${req.socket.localPort}/secret` });
      res.end();
    });
    // "pds.example" looks public to the guard; a fetch wrapper delivers it to the local server.
    const lookup = async () => [{ address: '93.184.216.34', family: 4 }];
    const routed: typeof fetch = (input, init) => {
      const u = new URL(input instanceof Request ? input.url : String(input));
      if (u.hostname === 'pds.example') u.host = new URL(pds).host;
      return fetch(u, init);
    };
    const err = await caught(getRepoBytes('http://pds.example', DID, { allowPrivate: false, lookup, fetch: routed, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(ForbiddenAddressError);
    expect((err as ForbiddenAddressError).url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/secret$/);
  });

  it('follows a redirect to an allowed host', async () => {
    const target = await serve((_req, res) => res.end('car bytes'));
    const pds = await serve((_req, res) => {
      res.writeHead(307, { location: `${target}/elsewhere` });
      res.end();
    });
    expect(new TextDecoder().decode(await getRepoBytes(pds, DID, { ...local, maxBytes: 1024 }))).toBe('car bytes');
  });

  it('maps a refused connection to TransportError', async () => {
    const pds = await serve(() => {});
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).code).toBe('ECONNREFUSED');
  });
});

describe('politeness against a PDS', () => {
  it('never has more than `concurrency` requests in flight at the server', async () => {
    let inFlight = 0;
    let peak = 0;
    const pds = await serve(async (_req, res) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await sleep(40);
      inFlight--;
      res.end('ok');
    });
    const politeness = new Politeness({ concurrency: 2 });
    await Promise.all(Array.from({ length: 8 }, () => getRepoBytes(pds, DID, { ...local, maxBytes: 1024, politeness })));
    expect(peak).toBe(2);
  });

  it('holds the next request to a host that answered 429 for its Retry-After', async () => {
    const arrivals: number[] = [];
    const pds = await serve((_req, res) => {
      arrivals.push(performance.now());
      if (arrivals.length === 1) return xrpcError(res, 429, 'RateLimitExceeded', undefined, { 'retry-after': '1' });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ did: DID, active: true, rev: '3kabc' }));
    });
    const politeness = new Politeness({ concurrency: 4 });
    expect(await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 1024, politeness }))).toBeInstanceOf(RateLimitedError);
    const status = await getRepoStatus(pds, DID, { ...local, politeness });
    expect(status).toEqual({ did: DID, active: true, rev: '3kabc' });
    expect(arrivals).toHaveLength(2);
    expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(950);
  });
});

describe('getRepoStatus, getBlob', () => {
  it('reads the repo status and refuses a malformed answer', async () => {
    let answer: unknown = { did: DID, active: false, status: 'deactivated' };
    const pds = await serve((req, res) => {
      expect(req.url).toBe(`/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(DID)}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(typeof answer === 'string' ? answer : JSON.stringify(answer));
    });
    expect(await getRepoStatus(pds, DID, local)).toEqual({ did: DID, active: false, status: 'deactivated' });
    answer = { did: DID };
    const err = await caught(getRepoStatus(pds, DID, local));
    expect(err).toBeInstanceOf(XrpcError);
    expect((err as XrpcError).error).toBe('InvalidResponse');
    expect((err as Error).message).toMatch(/active/);
    answer = '<html>';
    expect(((await caught(getRepoStatus(pds, DID, local))) as Error).message).toMatch(/not JSON/);
  });

  it('fetches a blob under its cap, and reports a missing one by name', async () => {
    const blob = Buffer.from('not really a png');
    const pds = await serve((req, res) => {
      const q = new URL(req.url!, 'http://x').searchParams;
      if (q.get('cid') === 'bafkreimissing') return xrpcError(res, 400, 'BlobNotFound', 'Blob not found');
      expect(q.get('did')).toBe(DID);
      res.end(blob);
    });
    expect(Buffer.from(await getBlob(pds, DID, 'bafkreiexists', { ...local, maxBytes: 1024 })).equals(blob)).toBe(true);
    const err = await caught(getBlob(pds, DID, 'bafkreimissing', { ...local, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(XrpcError);
    expect((err as XrpcError).error).toBe('BlobNotFound');
    expect(await caught(getBlob(pds, DID, 'bafkreiexists', { ...local, maxBytes: 8 }))).toBeInstanceOf(ResponseTooLargeError);
  });
});

describe('listRepos, listAllRepos', () => {
  const repo = (n: number) => ({ did: `did:plc:${'a'.repeat(23)}${'bcdefghijk'[n]}`, head: 'bafyreihead', rev: `3k${n}`, active: true });

  it('pages through three pages and stops at the empty one, as the reference PDS ends a listing', async () => {
    const cursors: (string | null)[] = [];
    const pages: Record<string, unknown> = {
      '': { cursor: 'c1', repos: [repo(1), repo(2)] },
      c1: { cursor: 'c2', repos: [repo(3), repo(4)] },
      c2: { cursor: 'c3', repos: [{ ...repo(5), active: false, status: 'takendown' }] },
      c3: { cursor: 'c4', repos: [] },
    };
    const pds = await serve((req, res) => {
      const q = new URL(req.url!, 'http://x').searchParams;
      expect(q.get('limit')).toBe('2');
      cursors.push(q.get('cursor'));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(pages[q.get('cursor') ?? '']));
    });
    const got = [];
    for await (const page of listAllRepos(pds, { ...local, limit: 2 })) got.push(page);
    expect(got.map((p) => p.repos.map((r) => r.rev))).toEqual([['3k1', '3k2'], ['3k3', '3k4'], ['3k5']]);
    expect(got.map((p) => p.cursor)).toEqual(['c1', 'c2', 'c3']);
    expect(got[2]!.repos[0]).toMatchObject({ active: false, status: 'takendown' });
    expect(cursors).toEqual([null, 'c1', 'c2', 'c3']);
  });

  it('stops after a page without a cursor, resumes from a given cursor, and refuses a cursor that does not move', async () => {
    let calls = 0;
    let loop = false;
    const pds = await serve((req, res) => {
      calls++;
      const cursor = new URL(req.url!, 'http://x').searchParams.get('cursor');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(loop ? { cursor: 'same', repos: [repo(1)] } : { repos: [repo(Number(cursor))] }));
    });
    const pages = [];
    for await (const p of listAllRepos(pds, { ...local, cursor: '7' })) pages.push(p);
    expect(pages).toHaveLength(1);
    expect(pages[0]!.repos[0]!.rev).toBe('3k7');
    expect(calls).toBe(1);

    loop = true;
    const err = await caught(async () => {
      for await (const _ of listAllRepos(pds, { ...local, cursor: 'same' })) {
        // drain
      }
    });
    expect((err as Error).message).toMatch(/did not advance/);
  });

  it('skips a malformed entry, naming it, and keeps the rest of the page', async () => {
    const pds = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ repos: [repo(1), { did: 'did:plc:x', rev: 1 }] }));
    });
    const page = await listRepos(pds, local);
    expect(page.repos.map((r) => r.rev)).toEqual(['3k1']);
    expect(page.skipped).toHaveLength(1);
    expect(page.skipped[0]!.index).toBe(1);
    expect(page.skipped[0]!.reason).toMatch(/^(head|rev)/);
  });
});
