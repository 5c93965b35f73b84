/**
 * The pinned GET's kept-alive connections (pinned-fetch.ts): opened only to checked addresses,
 * pooled per host (`scheme://host:port`), reused most recently used first, and only by a request
 * whose checked addresses include the one the connection was opened to; closed after
 * `IDLE_MS` idle. TLS sessions are kept per host to resume the handshake on a new connection.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { LookupAddress } from './address-guard.ts';

/** Idle connections are closed after this long (node's global agent's figure), before most servers close them. */
const IDLE_MS = 5000;
/** Idle connections kept per host; more are closed. */
const MAX_IDLE_PER_HOST = 64;
/** Hosts whose TLS session is kept. */
const MAX_TLS_SESSIONS = 10_000;

type Socket = net.Socket | tls.TLSSocket;

/** What a connection's events go to while a request owns it. */
export interface Owner {
  onData(chunk: Buffer): void;
  /** The peer closed (or the socket did): `error` when it failed. */
  onEnd(error?: NodeJS.ErrnoException): void;
}

/**
 * A kept-alive connection. Its listeners are set once, when it opens, and pass its events to the
 * request that owns it, or close it when idle (a server sends nothing unasked): not added and
 * removed around every request.
 */
export interface Conn {
  readonly socket: Socket;
  readonly key: string;
  /** The checked address it was opened to. */
  readonly peer: string;
  owner: Owner | undefined;
}

/** Idle kept-alive connections per `scheme://host:port`, the most recently used last. */
const idle = new Map<string, Conn[]>();
/** TLS sessions per host, to resume rather than repeat the handshake on a new connection; the oldest host's dropped past MAX_TLS_SESSIONS. */
const tlsSessions = new Map<string, Buffer>();

/** An idle connection to `key` whose peer is one of `addresses`, or undefined. */
export function takeIdle(key: string, addresses: LookupAddress[], owner: Owner): Conn | undefined {
  const list = idle.get(key);
  if (!list) return undefined;
  for (let i = list.length - 1; i >= 0; i--) {
    const c = list[i]!;
    if (c.socket.destroyed || !c.socket.writable) continue;
    let checked = false;
    for (const a of addresses) if (a.address === c.peer) checked = true;
    if (!checked) continue;
    if (i === list.length - 1) list.pop();
    else list.splice(i, 1);
    if (list.length === 0) idle.delete(key);
    c.owner = owner;
    c.socket.ref();
    return c;
  }
  return undefined;
}

function dropIdle(c: Conn): void {
  const list = idle.get(c.key);
  if (list) {
    const at = list.indexOf(c);
    if (at >= 0) list.splice(at, 1);
    if (list.length === 0) idle.delete(c.key);
  }
  c.socket.destroy();
}

export function release(c: Conn): void {
  c.owner = undefined;
  let list = idle.get(c.key);
  if (!list) idle.set(c.key, (list = []));
  if (list.length >= MAX_IDLE_PER_HOST) {
    c.socket.destroy();
    return;
  }
  c.socket.unref();
  list.push(c);
}

/** A connection around an open socket, its listeners set for good. */
function connOf(socket: Socket, key: string, peer: string, owner: Owner): Conn {
  const c: Conn = { socket, key, peer, owner };
  socket.on('data', (chunk: Buffer) => (c.owner ? c.owner.onData(chunk) : dropIdle(c)));
  socket.on('end', () => (c.owner ? c.owner.onEnd() : dropIdle(c)));
  socket.on('error', (err: Error) => (c.owner ? c.owner.onEnd(err) : dropIdle(c)));
  socket.on('close', () => (c.owner ? c.owner.onEnd() : dropIdle(c)));
  // Idle this long, it is closed; a request that owns it has its own timeouts (http.ts).
  socket.on('timeout', () => c.owner === undefined && dropIdle(c));
  socket.setTimeout(IDLE_MS);
  return c;
}

/** Opens a connection to the first of `addresses` that accepts one. */
export function connect(url: URL, hostname: string, port: number, addresses: LookupAddress[], key: string, owner: Owner, onConn: (c: Conn) => void, onError: (err: Error) => void): () => void {
  let i = 0;
  let socket: Socket | undefined;
  let cancelled = false;
  const next = (): void => {
    const a = addresses[i++];
    if (a === undefined) {
      onError(Object.assign(new Error(`no checked address for ${hostname}`), { code: 'ENOTFOUND' }));
      return;
    }
    let s: Socket;
    if (url.protocol === 'https:') {
      const session = tlsSessions.get(key);
      s = tls.connect({ host: a.address, port, servername: net.isIP(hostname) === 0 ? hostname : undefined, ALPNProtocols: ['http/1.1'], ...(session ? { session } : {}) });
      s.on('session', (sess: Buffer) => {
        if (tlsSessions.size >= MAX_TLS_SESSIONS && !tlsSessions.has(key)) tlsSessions.delete(tlsSessions.keys().next().value!);
        tlsSessions.set(key, sess);
      });
    } else {
      s = net.connect({ host: a.address, port, family: a.family });
    }
    socket = s;
    s.setNoDelay(true);
    const ready = url.protocol === 'https:' ? 'secureConnect' : 'connect';
    const fail = (err: Error) => {
      s.removeListener(ready, ok);
      s.destroy();
      if (cancelled) return;
      const code = (err as NodeJS.ErrnoException).code;
      // Refused or unreachable: the next checked address may answer (as node's autoSelectFamily does).
      if (i < addresses.length && (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL')) next();
      else onError(err);
    };
    const ok = () => {
      s.removeListener('error', fail);
      if (cancelled) s.destroy();
      else onConn(connOf(s, key, a.address, owner));
    };
    s.once('error', fail);
    s.once(ready, ok);
  };
  next();
  return () => {
    cancelled = true;
    socket?.destroy();
  };
}

