/**
 * The HTTP server that serves the mirror: XRPC under `/xrpc/<nsid>`, the tap event stream at
 * `/channel` (WebSocket), tap's admin endpoints, `/metrics` and `/_health`. It does the HTTP:
 * checks sizes, turns thrown `XrpcError`s into `{ error, message }` and anything else into a
 * 500 whose cause is logged, streams CARs with backpressure, and counts what it served.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type pg from 'pg';
import { WebSocketServer } from 'ws';
import type { BlobStore } from '../storage/blobstore/types.ts';
import type { Registry } from 'prom-client';
import { dropRepo } from '../backfill/import.ts';
import { ADMIN_ROUTES, checkAdminAuth, parseAdminBody, type AdminActions, type AdminRoute } from './admin.ts';
import { MissingBlockError, PackCache } from './blocks.ts';
import { XrpcError, invalidRequest } from './errors.ts';
import * as metrics from './metrics.ts';
import { parseParams } from './params.ts';
import { EventStream, StreamQuery, type StreamOptions } from './stream.ts';
import { tapRead, tapReadRoute } from './tap-info.ts';
import { METHODS, methodFor, type Reply, type XrpcDeps } from './xrpc.ts';
import { RepoCarPlans } from './repo-car.ts';
import { CarPlanStore } from './car-plan-store.ts';
import { takeRelease } from './lent.ts';

export interface ServeLimits {
  /** Largest admin request body. Default 1 MiB. */
  maxBodyBytes: number;
  /** Longest request URL (path and query). Default 8 KiB. */
  maxUrlBytes: number;
  /** Largest JSON response; a bigger one is refused rather than built. Default 16 MiB. */
  maxJsonBytes: number;
  /** getRepo requests assembled at once; more wait their turn. Default 4. */
  maxConcurrentRepos: number;
  /** Packs up to this size are read whole by getRepo. Default 128 MiB. */
  wholePackMax: number;
  /** Heads whose getRepo CAR is remembered as ranges of packs (0: none). Default 256. */
  repoCarPlans: number;
  /**
   * Whether what a head's getRepo CAR is made of is stored in PostgreSQL the first time it is
   * walked, so that every server (a fresh one too) sends that head with no walk. Default true.
   */
  storedCarPlans: boolean;
  /** Bytes of whole packs, read and checked, kept for the XRPC reads to share (0: none). Default 256 MiB. */
  packCacheBytes: number;
}

export const DEFAULT_LIMITS: ServeLimits = {
  maxBodyBytes: 1024 * 1024,
  maxUrlBytes: 8 * 1024,
  maxJsonBytes: 16 * 1024 * 1024,
  maxConcurrentRepos: 4,
  wholePackMax: 128 * 1024 * 1024,
  repoCarPlans: 256,
  storedCarPlans: true,
  packCacheBytes: 256 * 1024 * 1024,
};

export interface ServeOptions {
  pool: pg.Pool;
  store: BlobStore;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Bearer token of the admin endpoints; without one they answer 403. Never logged. */
  adminToken?: string;
  /**
   * What the admin endpoints do. Without one, add and resync answer 501; remove drops the
   * repo's records and events itself (status `dropped`), which needs no workflow.
   */
  admin?: Partial<AdminActions>;
  /** The registry `/metrics` serves (default: the serve metrics alone). */
  metrics?: Registry;
  limits?: Partial<ServeLimits>;
  stream?: StreamOptions;
  log?: (line: string) => void;
}

export interface ServeServer {
  /** http://host:port */
  url: string;
  port: number;
  stream: EventStream;
  close(): Promise<void>;
}

/** A counting semaphore: getRepo holds packs in memory, so only a few run at once. */
class Gate {
  #free: number;
  readonly #queue: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  async enter(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#queue.push(r));
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const next = this.#queue.shift();
      if (next) next();
      else this.#free++;
    };
  }
}

export async function startServeServer(opts: ServeOptions): Promise<ServeServer> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const log = opts.log ?? ((l: string) => console.error(l));
  const deps: XrpcDeps = {
    pool: opts.pool,
    store: opts.store,
    wholePackMax: limits.wholePackMax,
    ...(limits.repoCarPlans > 0 ? { carPlans: new RepoCarPlans({ maxPlans: limits.repoCarPlans }) } : {}),
    ...(limits.packCacheBytes > 0 ? { packCache: new PackCache(limits.packCacheBytes) } : {}),
    ...(limits.storedCarPlans ? { carPlanStore: new CarPlanStore(opts.pool, log) } : {}),
  };
  const stream = new EventStream(opts.pool, opts.store, opts.stream);
  const repoGate = new Gate(limits.maxConcurrentRepos);
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  const registry = opts.metrics ?? metrics.serveRegistry;
  const admin: Partial<AdminActions> = {
    async removeRepos(dids) {
      for (const did of dids) await dropRepo(opts.pool, did, 'dropped', { reason: 'removed through the serve admin API' });
    },
    ...opts.admin,
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<string> {
    const rawUrl = req.url ?? '/';
    if (Buffer.byteLength(rawUrl) > limits.maxUrlBytes) throw new XrpcError(414, 'InvalidRequest', `Error: the request URL is longer than ${limits.maxUrlBytes} bytes`);
    const url = new URL(rawUrl, 'http://serve.invalid');
    const path = url.pathname;
    if (path.startsWith('/xrpc/')) {
      const nsid = path.slice(6);
      const method = methodFor(nsid);
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new XrpcError(405, 'MethodNotAllowed', `${nsid} is a query: use GET`);
      const params = parseParams(method.params, url.searchParams);
      const release = nsid === 'com.atproto.sync.getRepo' ? await repoGate.enter() : undefined;
      try {
        await send(res, nsid, await method.handle(deps, params), limits);
      } finally {
        release?.();
      }
      return nsid;
    }
    if (Object.hasOwn(ADMIN_ROUTES, path)) {
      if (req.method !== 'POST') throw new XrpcError(405, 'MethodNotAllowed', `${path} takes POST`);
      checkAdminAuth(req.headers.authorization, opts.adminToken);
      const dids = parseAdminBody(await readBody(req, limits.maxBodyBytes));
      const action = admin[ADMIN_ROUTES[path as AdminRoute]];
      if (!action) throw new XrpcError(501, 'MethodNotImplemented', `${path} is not wired in this process`);
      await action(dids);
      res.writeHead(200, { 'content-length': 0 }).end();
      return path;
    }
    const tapRoute = tapReadRoute(path);
    if (tapRoute) {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new XrpcError(405, 'MethodNotAllowed', `${tapRoute}/<did> takes GET`);
      await send(res, tapRoute, { kind: 'json', body: await tapRead(opts.pool, tapRoute, path) }, limits);
      return tapRoute;
    }
    if (path === '/metrics') {
      const text = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType }).end(text);
      return path;
    }
    if (path === '/_health') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ version: 'repowalk' }));
      return path;
    }
    if (path === '/channel') throw new XrpcError(426, 'InvalidRequest', 'Error: /channel is a WebSocket: send Upgrade: websocket');
    throw new XrpcError(404, 'InvalidRequest', `Error: no route ${path}`);
  }

  const server: Server = createServer((req, res) => {
    const started = performance.now();
    let route = 'other';
    handle(req, res)
      .then((r) => (route = r))
      .catch((err: unknown) => {
        const nsidish = req.url?.startsWith('/xrpc/') ? req.url.slice(6).split('?')[0]! : undefined;
        const pathOnly = req.url?.split('?')[0] ?? '';
        route = nsidish && Object.hasOwn(METHODS, nsidish) ? nsidish : Object.hasOwn(ADMIN_ROUTES, pathOnly) ? pathOnly : (tapReadRoute(pathOnly) ?? 'other');
        const xe = toXrpcError(err, log, req.url ?? '');
        if (res.headersSent) {
          // Mid-stream: the client sees a truncated body, which a CAR reader reports.
          res.destroy(xe);
          return;
        }
        const body = JSON.stringify(xe.toJSON());
        if (xe.status === 413 || xe.status === 401) res.setHeader('connection', 'close');
        res.writeHead(xe.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        metrics.bytesServed.inc({ route }, Buffer.byteLength(body));
      })
      .finally(() => {
        metrics.requests.inc({ route, status: String(res.statusCode) });
        metrics.requestSeconds.observe({ route }, (performance.now() - started) / 1000);
      });
  });
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  // A request node's parser refuses (headers past its 16 KiB limit, a malformed request line)
  // gets an XRPC error body too, not node's bare status line, then the connection is closed.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || err.code === 'ECONNRESET') return void socket.destroy();
    const overflow = err.code === 'HPE_HEADER_OVERFLOW';
    const status = overflow ? 431 : 400;
    const body = JSON.stringify(invalidRequest(overflow ? 'Error: the request line and headers are longer than 16 KiB' : `Error: malformed HTTP request (${err.code ?? 'parse error'})`).toJSON());
    socket.end(`HTTP/1.1 ${status} ${overflow ? 'Request Header Fields Too Large' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    metrics.requests.inc({ route: 'other', status: String(status) });
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://serve.invalid');
    const refuse = (status: number, error: XrpcError) => {
      const body = JSON.stringify(error.toJSON());
      socket.end(`HTTP/1.1 ${status} ${status === 404 ? 'Not Found' : 'Bad Request'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      metrics.requests.inc({ route: 'stream', status: String(status) });
    };
    if (url.pathname !== '/channel') return refuse(404, new XrpcError(404, 'InvalidRequest', `Error: no WebSocket at ${url.pathname}`));
    let query: StreamQuery;
    try {
      query = parseParams(StreamQuery, url.searchParams);
    } catch (err) {
      return refuse(400, err instanceof XrpcError ? err : invalidRequest(String(err)));
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      metrics.requests.inc({ route: 'stream', status: '101' });
      stream.serve(ws, query).catch((err: unknown) => {
        log(`serve: stream client failed: ${(err as Error)?.stack ?? String(err)}`);
        ws.close(1011, 'internal error reading the event log');
        setTimeout(() => ws.terminate(), 2000).unref();
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    stream,
    async close() {
      await stream.close();
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function send(res: ServerResponse, route: string, reply: Reply, limits: ServeLimits): Promise<void> {
  switch (reply.kind) {
    case 'json': {
      const body = JSON.stringify(reply.body);
      if (body.length > limits.maxJsonBytes) throw new XrpcError(500, 'InternalServerError', `the response would be larger than ${limits.maxJsonBytes} bytes; ask for a smaller page`);
      const bytes = Buffer.byteLength(body);
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': bytes }).end(body);
      metrics.bytesServed.inc({ route }, bytes);
      return;
    }
    case 'bytes':
      res.writeHead(200, { 'content-type': reply.contentType, 'content-length': reply.body.length, ...reply.headers }).end(reply.body);
      metrics.bytesServed.inc({ route }, reply.body.length);
      return;
    case 'stream': {
      // The first chunk before the headers: a repo that cannot be read answers with an error,
      // not a 200 and a truncated CAR.
      const it = reply.body[Symbol.asyncIterator]();
      let next = await it.next();
      res.writeHead(200, { 'content-type': reply.contentType });
      let bytes = 0;
      try {
        while (!next.done) {
          bytes += next.value.length;
          // A lent chunk's buffer is reused once the socket has written it (the write's callback).
          // The next chunk is asked for while up to WRITE_AHEAD bytes wait to be written, so the
          // socket always has the next bytes queued (no wait for a drain per chunk).
          const release = takeRelease(next.value);
          if (!res.write(next.value, release && (() => release())) && res.writableLength > WRITE_AHEAD) await drained(res);
          next = await it.next();
        }
      } finally {
        metrics.bytesServed.inc({ route }, bytes);
        if (!next.done) await it.return?.(undefined);
      }
      await new Promise<void>((resolve) => res.end(resolve));
      return;
    }
  }
}

/** Bytes of a streamed body queued to the socket before the next chunk waits for a drain. */
const WRITE_AHEAD = 6 * 1024 * 1024;

function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', closed);
      resolve();
    };
    const closed = () => {
      res.off('drain', done);
      reject(new Error('client went away'));
    };
    res.on('drain', done);
    res.once('close', closed);
  });
}

async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > max) throw new XrpcError(413, 'PayloadTooLarge', `request body is ${declared} bytes; at most ${max} allowed`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new XrpcError(413, 'PayloadTooLarge', `request body is more than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function toXrpcError(err: unknown, log: (l: string) => void, url: string): XrpcError {
  if (err instanceof XrpcError) return err;
  if (err instanceof MissingBlockError) {
    log(`serve: ${url.slice(0, 200)}: ${err.message}`);
    return new XrpcError(500, 'InternalServerError', `the mirror cannot read this repo: ${err.message}`);
  }
  log(`serve: ${url.slice(0, 200)}: ${(err as Error)?.stack ?? String(err)}`);
  return new XrpcError(500, 'InternalServerError', 'Internal Server Error');
}
