/**
 * A small fault-injecting reverse proxy (node:http) for XRPC, in front of a PDS (or a PLC):
 * requests pass through unchanged unless a rule matches them by path, DID and method; a rule
 * answers 429 with Retry-After / RateLimit-Reset, an XRPC error (e.g. RepoSuspended), any
 * canned answer, resets the connection or ends the body early after N bytes, flips a byte of
 * the body at an offset, delays, throttles or never answers.
 *
 *   const faults = await startFaultServer({ upstream: pds.pdsUrl });
 *   faults.setRule({ path: 'com.atproto.sync.getRepo', did, times: 1,
 *                    action: { type: 'rateLimit', retryAfter: 2 } });
 *   // point the client at faults.url instead of pds.pdsUrl
 *   await faults.stop();
 *
 * Body offsets count bytes of the uncompressed body: when a rule touches the body, the request
 * goes upstream without Accept-Encoding. Unmatched requests keep theirs.
 */
import http from 'node:http';
import type { IncomingMessage, ServerResponse, OutgoingHttpHeaders } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';

export type FaultAction =
  /** 429 (or `status`) with `Retry-After: retryAfter` seconds (null: no header) and
   *  `RateLimit-Limit/Remaining/Reset` (reset = now + resetIn seconds, epoch seconds; null: none). */
  | { type: 'rateLimit'; retryAfter?: number | null; resetIn?: number | null; limit?: number; status?: number; message?: string }
  /** An XRPC error answer: `{"error": error, "message": message}` with `status` (default 400). */
  | { type: 'error'; error: string; message?: string; status?: number }
  /** Any canned answer. An object body is sent as JSON. */
  | { type: 'respond'; status: number; headers?: Record<string, string>; body?: string | Uint8Array | object }
  /** Forward; send the status, headers and the first `afterBytes` body bytes, then reset the
   *  TCP connection (RST). The client sees a connection error mid-body. */
  | { type: 'reset'; afterBytes: number }
  /** Forward; send only the first `afterBytes` body bytes and end the response cleanly (chunked,
   *  no Content-Length): the HTTP exchange looks complete, the body is short. */
  | { type: 'truncate'; afterBytes: number }
  /** Forward; XOR the body byte at `offset` with `xor` (default 0x01). Content-Length is kept. */
  | { type: 'flipByte'; offset: number; xor?: number }
  /** Forward; parse the upstream JSON body, answer with `map(body)` (Content-Length adjusted).
   *  In front of a PLC this serves a doctored DID document, e.g. one whose PDS endpoint is this
   *  fault server or a private address. */
  | { type: 'mapJson'; map: (body: unknown) => unknown }
  /** Forward unchanged after `ms` (same as `delayMs` on the rule). */
  | { type: 'delay'; ms: number }
  /** Forward with the body paced to `bytesPerSecond`. */
  | { type: 'throttle'; bytesPerSecond: number }
  /** Never answer (the socket stays open until the client gives up or the server stops). */
  | { type: 'hang' };

export interface FaultRule {
  /** An NSID (`com.atproto.sync.getRepo`), a path (`/xrpc/…`, or `/did:plc:…` in front of a
   *  PLC), or a RegExp, tested on the percent-decoded path. Absent: any path. */
  path?: string | RegExp;
  /** Matches the `did` or `repo` query parameter. Absent: any. */
  did?: string;
  /** HTTP method. Absent: any. */
  method?: string;
  /** Applies to the first `times` matching requests, then retires (default: every one). */
  times?: number;
  /** Waits this long before acting. */
  delayMs?: number;
  action: FaultAction;
}

export interface FaultLogEntry {
  at: number;
  method: string;
  path: string;
  did: string | undefined;
  /** The id of the rule applied, if any, and its action type. */
  ruleId: string | undefined;
  action: FaultAction['type'] | 'pass';
  /** Status of a completed response (undefined for hang, reset, or a client that went away). */
  status: number | undefined;
}

export interface FaultServer {
  url: string;
  upstream: string;
  /** Adds a rule (checked in the order added; the first live match wins); returns its id. */
  setRule(rule: FaultRule): string;
  removeRule(id: string): void;
  clearRules(): void;
  /** How many requests a rule has been applied to (also after it was removed). */
  hits(id: string): number;
  /** Every request seen, in order. */
  readonly log: FaultLogEntry[];
  /**
   * The most requests to `path` (an NSID or a path, as rules name them) being answered at
   * once since the server started or `resetPeaks()`: what a politeness limit is about.
   */
  peakConcurrency(path: string): number;
  resetPeaks(): void;
  stop(): Promise<void>;
}

interface LiveRule {
  id: string;
  rule: FaultRule;
  hits: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer']);

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function pathMatches(want: string | RegExp | undefined, path: string): boolean {
  if (want === undefined) return true;
  if (want instanceof RegExp) return want.test(path);
  return path === want || path === `/xrpc/${want}`;
}

export async function startFaultServer(opts: { upstream: string; port?: number }): Promise<FaultServer> {
  const upstream = new URL(opts.upstream);
  const rules: LiveRule[] = [];
  const everyRule = new Map<string, LiveRule>();
  const log: FaultLogEntry[] = [];
  const inFlight = new Map<string, number>();
  const peaks = new Map<string, number>();
  const sockets = new Set<Socket>();
  const agent = new http.Agent({ keepAlive: true });
  let nextId = 1;

  const pick = (method: string, path: string, did: string | undefined): LiveRule | undefined => {
    for (const r of rules) {
      const { rule } = r;
      if (rule.times !== undefined && r.hits >= rule.times) continue;
      if (rule.method && rule.method.toUpperCase() !== method) continue;
      if (!pathMatches(rule.path, path)) continue;
      if (rule.did !== undefined && rule.did !== did) continue;
      return r;
    }
    return undefined;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = (req.method ?? 'GET').toUpperCase();
    const did = url.searchParams.get('did') ?? url.searchParams.get('repo') ?? undefined;
    let pathname = url.pathname;
    try {
      pathname = decodeURIComponent(pathname);
    } catch {
      // keep it encoded
    }
    const live = pick(method, pathname, did);
    if (live) live.hits++;
    const entry: FaultLogEntry = {
      at: Date.now(),
      method,
      path: pathname,
      did,
      ruleId: live?.id,
      action: live ? live.rule.action.type : 'pass',
      status: undefined,
    };
    log.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    inFlight.set(pathname, (inFlight.get(pathname) ?? 0) + 1);
    peaks.set(pathname, Math.max(peaks.get(pathname) ?? 0, inFlight.get(pathname)!));
    res.once('close', () => inFlight.set(pathname, inFlight.get(pathname)! - 1));
    const action = live?.rule.action;
    if (live?.rule.delayMs) await sleep(live.rule.delayMs);

    switch (action?.type) {
      case 'rateLimit': {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        const limit = action.limit ?? 100;
        if (action.retryAfter !== null) headers['retry-after'] = String(action.retryAfter ?? 1);
        if (action.resetIn !== null) {
          headers['ratelimit-limit'] = String(limit);
          headers['ratelimit-remaining'] = '0';
          headers['ratelimit-reset'] = String(Math.ceil(Date.now() / 1000 + (action.resetIn ?? action.retryAfter ?? 1)));
          headers['ratelimit-policy'] = `${limit};w=300`;
        }
        res.writeHead(action.status ?? 429, headers);
        res.end(JSON.stringify({ error: 'RateLimitExceeded', message: action.message ?? 'Rate Limit Exceeded (fault server)' }));
        req.resume();
        return;
      }
      case 'error':
        res.writeHead(action.status ?? 400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: action.error, message: action.message ?? `${action.error} (fault server)` }));
        req.resume();
        return;
      case 'respond': {
        const headers = { ...(action.headers ?? {}) };
        let body: string | Uint8Array | undefined;
        if (action.body === undefined || typeof action.body === 'string' || action.body instanceof Uint8Array) body = action.body;
        else {
          body = JSON.stringify(action.body);
          headers['content-type'] ??= 'application/json';
        }
        res.writeHead(action.status, headers);
        res.end(body);
        req.resume();
        return;
      }
      case 'hang':
        req.resume();
        return;
      case 'delay':
        await sleep(action.ms);
        break;
      default:
        break;
    }

    // Forward upstream.
    const touchesBody = action?.type === 'reset' || action?.type === 'truncate' || action?.type === 'flipByte' || action?.type === 'mapJson';
    const headers: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (HOP_BY_HOP.has(k) || v === undefined) continue;
      if (touchesBody && k === 'accept-encoding') continue;
      headers[k] = v;
    }
    headers.host = upstream.host;
    const upReq = http.request({
      protocol: upstream.protocol,
      hostname: upstream.hostname,
      port: upstream.port,
      method,
      path: `${upstream.pathname.replace(/\/+$/, '')}${req.url ?? '/'}`,
      headers,
      agent,
    });
    req.pipe(upReq);
    req.on('aborted', () => upReq.destroy());
    res.on('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    let upRes: IncomingMessage;
    try {
      [upRes] = (await once(upReq, 'response')) as [IncomingMessage];
    } catch (err) {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'UpstreamFailure', message: `fault server: upstream: ${String(err)}` }));
      }
      return;
    }
    const outHeaders: OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(upRes.headers)) {
      if (HOP_BY_HOP.has(k) || v === undefined) continue;
      outHeaders[k] = v;
    }
    const status = upRes.statusCode ?? 502;

    if (action?.type === 'mapJson') {
      const chunks: Buffer[] = [];
      for await (const chunk of upRes as AsyncIterable<Buffer>) chunks.push(chunk);
      const text = Buffer.concat(chunks).toString('utf8');
      const body = Buffer.from(JSON.stringify(action.map(text ? (JSON.parse(text) as unknown) : undefined)));
      outHeaders['content-length'] = String(body.length);
      outHeaders['content-type'] ??= 'application/json';
      res.writeHead(status, outHeaders);
      res.end(body);
      return;
    }
    if (action?.type === 'truncate') delete outHeaders['content-length'];
    res.writeHead(status, outHeaders);
    res.flushHeaders();

    let sent = 0;
    const socket = res.socket;
    try {
      for await (const chunk of upRes as AsyncIterable<Buffer>) {
        let piece = chunk;
        if (action?.type === 'flipByte') {
          const at = action.offset - sent;
          if (at >= 0 && at < piece.length) {
            piece = Buffer.from(piece);
            piece[at] = piece[at]! ^ (action.xor ?? 0x01);
          }
        } else if (action?.type === 'reset' || action?.type === 'truncate') {
          const room = action.afterBytes - sent;
          if (piece.length >= room) {
            piece = piece.subarray(0, Math.max(room, 0));
            if (piece.length > 0) await write(res, piece);
            sent += piece.length;
            upRes.destroy();
            if (action.type === 'truncate') res.end();
            else resetSocket(socket);
            return;
          }
        } else if (action?.type === 'throttle') {
          await sleep((piece.length / Math.max(action.bytesPerSecond, 1)) * 1000);
        }
        await write(res, piece);
        sent += piece.length;
      }
    } catch {
      // Upstream or client went away; drop the connection so the client sees an error.
      resetSocket(socket);
      return;
    }
    if (action?.type === 'reset') {
      // The body was shorter than afterBytes: reset before the response completes.
      resetSocket(socket);
      return;
    }
    res.end();
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'InternalServerError', message: `fault server: ${String(err)}` }));
      } else {
        res.destroy();
      }
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(opts.port ?? 0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    upstream: opts.upstream,
    setRule(rule) {
      const id = `rule-${nextId++}`;
      const live = { id, rule, hits: 0 };
      rules.push(live);
      everyRule.set(id, live);
      return id;
    },
    removeRule(id) {
      const i = rules.findIndex((r) => r.id === id);
      if (i >= 0) rules.splice(i, 1);
    },
    clearRules() {
      rules.length = 0;
    },
    hits(id) {
      return everyRule.get(id)?.hits ?? 0;
    },
    log,
    peakConcurrency(path) {
      let peak = 0;
      for (const [p, n] of peaks) if (pathMatches(path, p)) peak = Math.max(peak, n);
      return peak;
    },
    resetPeaks() {
      peaks.clear();
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await closed;
    },
  };
}

function write(res: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    res.write(chunk, (err) => (err ? reject(err) : resolve()));
  });
}

function resetSocket(socket: Socket | null): void {
  if (!socket || socket.destroyed) return;
  if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
  else socket.destroy();
}
