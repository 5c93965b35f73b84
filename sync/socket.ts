/**
 * One connection to `com.atproto.sync.subscribeRepos`, read as an async queue of raw frames with
 * backpressure: when the consumer falls behind, the socket is paused (TCP pushes back on the
 * upstream) rather than frames piling up in memory.
 */
import WebSocket from 'ws';
import { MAX_FRAME_BYTES } from './frames.ts';

export interface FrameQueue {
  /** Up to `max` frames; waits up to `waitMs` for the first one. Empty when the socket closed or timed out. */
  take(max: number, waitMs: number): Promise<Uint8Array[]>;
  /** Frames read and not yet taken. */
  readonly pending: number;
  /** Why the connection ended, once it has (after the queue drained, nothing more comes). */
  readonly closed: Error | 'closed' | undefined;
  close(): void;
}

/** The subscribeRepos URL of `host` (an origin, http(s) or ws(s)), from `cursor` when given. */
export function subscribeUrl(host: string, cursor: number | undefined): string {
  const u = new URL('/xrpc/com.atproto.sync.subscribeRepos', host);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (cursor !== undefined) u.searchParams.set('cursor', String(cursor));
  return u.toString();
}

export async function openFrames(url: string, opts: { highWater?: number; signal: AbortSignal; connectTimeoutMs?: number }): Promise<FrameQueue> {
  const high = opts.highWater ?? 2000;
  // maxPayload bounds a frame before it is buffered whole; a larger one closes the socket (1009).
  const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, handshakeTimeout: opts.connectTimeoutMs ?? 15_000 });
  const frames: Uint8Array[] = [];
  let closed: Error | 'closed' | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    frames.push(isBinary ? data : Buffer.from(data));
    if (frames.length >= high) ws.pause();
    notify();
  });
  ws.on('error', (err) => {
    closed ??= err;
    notify();
  });
  ws.on('close', (code, reason) => {
    closed ??= code === 1000 || code === 1005 ? 'closed' : new Error(`upstream closed the connection (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
    notify();
  });
  const onAbort = () => ws.terminate();
  opts.signal.addEventListener('abort', onAbort, { once: true });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('close', () => reject(closed instanceof Error ? closed : new Error('closed before open')));
  });
  return {
    async take(max, waitMs) {
      if (frames.length === 0 && closed === undefined) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, waitMs);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
      const out = frames.splice(0, max);
      if (frames.length < high / 2 && ws.isPaused) ws.resume();
      return out;
    },
    get pending() {
      return frames.length;
    },
    get closed() {
      return frames.length === 0 ? closed : undefined;
    },
    close() {
      opts.signal.removeEventListener('abort', onAbort);
      ws.terminate();
    },
  };
}
