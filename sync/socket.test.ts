/**
 * The frame queue holds a bounded number of bytes in flight: when nothing is taken it stops
 * reading the socket (the upstream's sends back up), and it reads again once taken below half;
 * a take stays within its byte budget, one frame at least.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';
import { openFrames } from './socket.ts';

let server: Server | undefined;
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

/** An upstream that sends `count` frames of `size` bytes (frame i filled with i % 251) as fast as it may; reports what it has sent and what it still buffers. */
async function upstream(count: number, size: number) {
  server = createServer();
  const wss = new WebSocketServer({ server });
  const state = { sent: 0, socket: undefined as WebSocket | undefined };
  wss.on('connection', (ws) => {
    state.socket = ws;
    void (async () => {
      for (let i = 0; i < count; i++) {
        // Past a few MB not yet taken by TCP, wait, as a relay does.
        while (ws.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 2));
        ws.send(new Uint8Array(size).fill(i % 251));
        state.sent++;
      }
    })();
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return { url: `ws://127.0.0.1:${(server.address() as { port: number }).port}`, state };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('openFrames', () => {
  it('stops reading at its byte budget while nothing is taken, and reads on once it is', async () => {
    const size = 20_000;
    const count = 3000; // 60 MB: far more than the budget, the TCP buffers and the upstream's own backlog
    const { url, state } = await upstream(count, size);
    const stop = new AbortController();
    const budget = 400_000;
    const queue = await openFrames(url, { highWater: 1_000_000, highWaterBytes: budget, signal: stop.signal });
    try {
      await sleep(500);
      const held = queue.pendingBytes;
      expect(queue.paused).toBe(true);
      expect(held).toBeGreaterThanOrEqual(budget);
      // What ws had read before it paused may still land, and nothing after.
      expect(held).toBeLessThan(budget + 1024 * 1024);
      await sleep(500);
      expect(queue.pendingBytes).toBe(held);
      // The upstream is held back too: not all of its frames could be sent.
      expect(state.sent).toBeLessThan(count);

      // Taken, in order, within each take's byte budget; reading resumes until the end.
      let next = 0;
      while (next < count) {
        const got = await queue.take(1000, 2000, 100_000);
        expect(got.length).toBeGreaterThan(0);
        expect(got.length * size).toBeLessThanOrEqual(100_000);
        for (const f of got) {
          expect(f.length).toBe(size);
          expect(f[0]).toBe(next % 251);
          next++;
        }
        expect(queue.pendingBytes).toBeLessThan(budget + 1024 * 1024);
      }
      expect(next).toBe(count);
    } finally {
      queue.close();
      stop.abort();
    }
  }, 60_000);

  it('gives one frame at least, even one over the take budget', async () => {
    const { url } = await upstream(3, 50_000);
    const stop = new AbortController();
    const queue = await openFrames(url, { signal: stop.signal });
    try {
      const got: Uint8Array[] = [];
      while (got.length < 3) {
        const batch = await queue.take(10, 2000, 10_000);
        expect(batch.length).toBe(1);
        got.push(...batch);
      }
      expect(got.map((f) => f[0])).toEqual([0, 1, 2]);
    } finally {
      queue.close();
      stop.abort();
    }
  }, 30_000);
});
