/**
 * A scripted subscribeRepos upstream for fault tests: it serves a list of frames (real ones
 * recorded from the reference PDS, or altered, or made up), each from the consumer's cursor on,
 * and can cut a connection in the middle of a frame. Only the faults are made up; the frames it
 * replays are the PDS's own.
 */
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import * as CBOR from '@atcute/cbor';

export interface ScriptedFrame {
  /** The frame's seq (frames without one, #info and garbage, are sent once only). */
  seq: number | undefined;
  bytes: Uint8Array;
  /** Cut the first connection that reaches this frame halfway through sending it. */
  resetMidFrame?: boolean;
}

export interface FirehoseServer {
  url: string;
  /** Cursors the consumer connected with, in order (undefined: none). */
  connections: Array<number | undefined>;
  stop(): Promise<void>;
}

export function encodeFrame(header: Record<string, unknown>, body: Record<string, unknown>): Uint8Array {
  return Buffer.concat([CBOR.encode(header), CBOR.encode(body)]);
}

export function decodeFrameParts(bytes: Uint8Array): { header: Record<string, unknown>; body: Record<string, unknown> } {
  const [header, rest] = CBOR.decodeFirst(bytes);
  return { header, body: CBOR.decode(rest) };
}

/** Records the PDS's firehose from seq 0 until `done` says the frames suffice (or timeout). */
export async function recordFrames(pdsUrl: string, done: (frames: Uint8Array[]) => boolean, timeoutMs = 20_000): Promise<Uint8Array[]> {
  const url = new URL('/xrpc/com.atproto.sync.subscribeRepos?cursor=0', pdsUrl);
  url.protocol = 'ws:';
  const ws = new WebSocket(url);
  const frames: Uint8Array[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`recorded ${frames.length} frames, not enough, in ${timeoutMs} ms`)), timeoutMs);
      ws.on('message', (d: Buffer) => {
        frames.push(new Uint8Array(d));
        if (done(frames)) {
          clearTimeout(t);
          resolve();
        }
      });
      ws.on('error', reject);
    });
  } finally {
    ws.terminate();
  }
  return frames;
}

export async function startFirehoseServer(script: ScriptedFrame[]): Promise<FirehoseServer> {
  const server: Server = createServer();
  const wss = new WebSocketServer({ noServer: true });
  const connections: Array<number | undefined> = [];
  const sentOnce = new Set<ScriptedFrame>();
  const reset = new Set<ScriptedFrame>();
  server.on('upgrade', (req, socket, head) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/xrpc/com.atproto.sync.subscribeRepos') return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c = u.searchParams.get('cursor');
      const cursor = c === null ? undefined : Number(c);
      connections.push(cursor);
      void (async () => {
        for (const f of script) {
          if (ws.readyState !== WebSocket.OPEN) return;
          if (f.seq === undefined ? sentOnce.has(f) : cursor !== undefined && f.seq <= cursor) continue;
          if (f.resetMidFrame && !reset.has(f)) {
            reset.add(f);
            // A binary frame's header, then half its payload, then the connection is gone.
            const raw = (ws as unknown as { _socket: Socket })._socket;
            const len = f.bytes.length;
            const header = len < 126 ? Buffer.from([0x82, len]) : len < 65536 ? Buffer.from([0x82, 126, len >> 8, len & 255]) : Buffer.from([0x82, 127, 0, 0, 0, 0, len >>> 24, (len >> 16) & 255, (len >> 8) & 255, len & 255]);
            raw.write(Buffer.concat([header, Buffer.from(f.bytes.subarray(0, len >> 1))]));
            await new Promise((r) => setTimeout(r, 50));
            raw.destroy();
            return;
          }
          if (f.seq === undefined) sentOnce.add(f);
          ws.send(f.bytes);
          await new Promise((r) => setImmediate(r));
        }
      })();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    connections,
    async stop() {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => server.close(r));
    },
  };
}
