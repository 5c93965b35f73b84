/**
 * One connection to `com.atproto.sync.subscribeRepos`, read as an async queue of raw frames with
 * backpressure: when the consumer falls behind, the socket is paused (TCP pushes back on the
 * upstream) rather than frames piling up in memory. The queue is bounded in frames and in bytes
 * (a frame may be up to MAX_FRAME_BYTES): it stops reading at either high-water mark and reads
 * again once it is under half of both. What ws had already read from the socket when it paused
 * still arrives, so the queue can pass a mark by that much (the test measures it: well under a
 * MiB).
 */
import WebSocket from 'ws';
import { MAX_FRAME_BYTES } from './frames.ts';

export interface FrameQueue {
  /**
   * Up to `max` frames and, past the first, up to `maxBytes` bytes of them; waits up to `waitMs`
   * for the first one. Empty when the socket closed or timed out.
   */
  take(max: number, waitMs: number, maxBytes?: number): Promise<Uint8Array[]>;
  /** Frames read and not yet taken. */
  readonly pending: number;
  /** Their bytes. */
  readonly pendingBytes: number;
  /** Whether reading is paused (a high-water mark reached). */
  readonly paused: boolean;
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

/** Default high-water marks of a connection's queue of frames read and not taken. */
export const QUEUE_HIGH_WATER = 2000;
export const QUEUE_HIGH_WATER_BYTES = 32 * 1024 * 1024;

export async function openFrames(url: string, opts: { highWater?: number; highWaterBytes?: number; signal: AbortSignal; connectTimeoutMs?: number }): Promise<FrameQueue> {
  const high = opts.highWater ?? QUEUE_HIGH_WATER;
  const highBytes = opts.highWaterBytes ?? QUEUE_HIGH_WATER_BYTES;
  // maxPayload bounds a frame before it is buffered whole; a larger one closes the socket (1009).
  const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, handshakeTimeout: opts.connectTimeoutMs ?? 15_000 });
  const frames: Uint8Array[] = [];
  let bytes = 0;
  let closed: Error | 'closed' | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    const frame = isBinary ? data : Buffer.from(data);
    frames.push(frame);
    bytes += frame.length;
    if (frames.length >= high || bytes >= highBytes) ws.pause();
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
    async take(max, waitMs, maxBytes = Infinity) {
      if (frames.length === 0 && closed === undefined) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, waitMs);
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
      }
      let n = 0;
      let taken = 0;
      while (n < frames.length && n < max && (n === 0 || taken + frames[n]!.length <= maxBytes)) taken += frames[n++]!.length;
      const out = frames.splice(0, n);
      bytes -= taken;
      if (frames.length < high / 2 && bytes < highBytes / 2 && ws.isPaused) ws.resume();
      return out;
    },
    get pending() {
      return frames.length;
    },
    get pendingBytes() {
      return bytes;
    },
    get paused() {
      return ws.isPaused;
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
