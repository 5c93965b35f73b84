import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { pinnedGet } from './pinned-fetch.ts';

/**
 * A server that answers the first request of each connection and then, per `onSecond`, either
 * drops the connection when a second request arrives on it (what a server does that closed an
 * idle kept-alive socket) or answers it.
 */
async function server(opts: { dropFirstRequestOfConnection?: number[] }): Promise<{ url: URL; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const open = new Set<net.Socket>();
  const srv = net.createServer((socket) => {
    const n = ++connections;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    let requests = 0;
    let buf = '';
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        requests++;
        if (requests > 1 || opts.dropFirstRequestOfConnection?.includes(n)) {
          socket.destroy();
          return;
        }
        const body = `connection ${n}`;
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n${body}`);
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: new URL(`http://127.0.0.1:${port}/x`),
    connections: () => connections,
    close: () =>
      new Promise((r) => {
        for (const socket of open) socket.destroy();
        srv.close(() => r());
      }),
  };
}

const get = (url: URL) => pinnedGet(url, { headers: {}, signal: AbortSignal.timeout(5_000), addresses: [{ address: '127.0.0.1', family: 4 }] });
const text = async (res: Awaited<ReturnType<typeof get>>) => {
  let out = '';
  for await (const chunk of res.body!) out += String(chunk);
  return out;
};

describe('pinnedGet', () => {
  it('sends a request again on a fresh connection when the kept-alive socket it reused was closed by the server', async () => {
    const s = await server({});
    try {
      expect(await text(await get(s.url))).toBe('connection 1');
      // The second request goes out on connection 1 (kept alive), which the server drops.
      expect(await text(await get(s.url))).toBe('connection 2');
      expect(s.connections()).toBe(2);
    } finally {
      await s.close();
    }
  });

  it('does not send again when a fresh connection is dropped: the caller sees the reset', async () => {
    const s = await server({ dropFirstRequestOfConnection: [1, 2] });
    try {
      await expect(get(s.url)).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(s.connections()).toBe(1);
    } finally {
      await s.close();
    }
  });
});
