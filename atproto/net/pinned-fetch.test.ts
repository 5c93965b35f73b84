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

/**
 * A raw HTTP server whose answers the test writes byte for byte: `answer` gets each request's
 * head and the connection's number and writes to the socket itself (in pieces, with delays,
 * malformed, as it likes).
 */
async function rawServer(answer: (socket: net.Socket, request: string, connection: number) => void, host = '127.0.0.1'): Promise<{ port: number; connections: () => number; peers: string[]; requests: string[]; close: () => Promise<void> }> {
  let connections = 0;
  const open = new Set<net.Socket>();
  const peers: string[] = [];
  const requests: string[] = [];
  const srv = net.createServer((socket) => {
    const n = ++connections;
    peers.push(socket.localAddress!);
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
        const request = buf.slice(0, end);
        buf = buf.slice(end + 4);
        requests.push(request);
        answer(socket, request, n);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, host, r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    connections: () => connections,
    peers,
    requests,
    close: () =>
      new Promise((r) => {
        for (const socket of open) socket.destroy();
        srv.close(() => r());
      }),
  };
}

const at = (port: number, address = '127.0.0.1', path = '/x') => (headers: Record<string, string> = {}) =>
  pinnedGet(new URL(`http://${address}:${port}${path}`), { headers, signal: AbortSignal.timeout(5_000), addresses: [{ address, family: 4 }] });

describe('pinnedGet: the HTTP/1.1 exchange', () => {
  it('reuses one kept-alive connection for requests one after another, and sends the Host and the headers given', async () => {
    const s = await rawServer((socket, _req, n) => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${n}`));
    try {
      const get = at(s.port);
      for (let i = 0; i < 5; i++) expect(await text(await get({ accept: 'application/json' }))).toBe('1');
      expect(s.connections()).toBe(1);
      expect(s.requests[0]).toMatch(new RegExp(`^GET /x HTTP/1\\.1\\r\\nHost: 127\\.0\\.0\\.1:${s.port}\\r\\naccept: application/json\\r\\n`));
    } finally {
      await s.close();
    }
  });

  it('opens a connection per request in flight at once, and reuses them after', async () => {
    const held: net.Socket[] = [];
    const s = await rawServer((socket) => {
      held.push(socket);
      if (held.length === 3) for (const h of held.splice(0)) h.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    try {
      const get = at(s.port);
      expect(await Promise.all([get(), get(), get()].map(async (r) => text(await r)))).toEqual(['ok', 'ok', 'ok']);
      expect(await Promise.all([get(), get(), get()].map(async (r) => text(await r)))).toEqual(['ok', 'ok', 'ok']);
      expect(s.connections()).toBe(3);
    } finally {
      await s.close();
    }
  });

  it('does not reuse a connection whose peer is not among the addresses checked for the next request', async () => {
    const s = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), '0.0.0.0');
    try {
      // Both are the same host name's checked addresses in turn (what a changed DNS answer gives).
      const url = new URL(`http://pds.test:${s.port}/x`);
      const via = (address: string) => pinnedGet(url, { headers: {}, addresses: [{ address, family: 4 }] });
      expect(await text(await via('127.0.0.1'))).toBe('ok');
      expect(await text(await via('127.0.0.2'))).toBe('ok');
      expect(await text(await via('127.0.0.2'))).toBe('ok');
      expect(s.peers).toEqual(['127.0.0.1', '127.0.0.2']);
      expect(s.requests[0]).toContain(`Host: pds.test:${s.port}\r\n`);
    } finally {
      await s.close();
    }
  });

  it('reads a chunked body split across packets (extensions and trailers too), and keeps the connection', async () => {
    const s = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel');
      setTimeout(() => socket.write('lo\r\n'), 5);
      setTimeout(() => socket.write('6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n'), 10);
    });
    try {
      const get = at(s.port);
      expect(await text(await get())).toBe('hello world');
      expect(await text(await get())).toBe('hello world');
      expect(s.connections()).toBe(1);
    } finally {
      await s.close();
    }
  });

  it('reads a body delimited by the connection closing, and does not reuse that connection', async () => {
    const s = await rawServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\n\r\nuntil the end');
      socket.end();
    });
    try {
      const get = at(s.port);
      expect(await text(await get())).toBe('until the end');
      expect(await text(await get())).toBe('until the end');
      expect(s.connections()).toBe(2);
    } finally {
      await s.close();
    }
  });

  it('decodes a gzip body, skips an interim 100 response, and joins repeated headers', async () => {
    const { gzipSync } = await import('node:zlib');
    const gz = gzipSync(Buffer.from('compressed text'));
    const s = await rawServer((socket) => {
      socket.write('HTTP/1.1 100 Continue\r\n\r\n');
      socket.write(`HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nX-A: 1\r\nx-a: 2\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nContent-Length: ${gz.length}\r\n\r\n`);
      socket.write(gz);
    });
    try {
      const res = await at(s.port)();
      expect(res.status).toBe(200);
      expect(res.headers['x-a']).toBe('1, 2');
      expect(res.headers['set-cookie']).toEqual(['a', 'b']);
      expect(await text(res)).toBe('compressed text');
    } finally {
      await s.close();
    }
  });

  it('has no body for 204 and keeps the connection', async () => {
    const s = await rawServer((socket) => socket.write('HTTP/1.1 204 No Content\r\n\r\n'));
    try {
      const get = at(s.port);
      expect((await get()).body).toBeNull();
      expect((await get()).status).toBe(204);
      expect(s.connections()).toBe(1);
    } finally {
      await s.close();
    }
  });

  it.each([
    ['headers past the cap', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 'HPE_HEADER_OVERFLOW'],
    ['endless headers with no end of head', `HTTP/1.1 200 OK\r\n${'X-A: 1\r\n'.repeat(3000)}`, 'HPE_HEADER_OVERFLOW'],
    ['a malformed status line', 'HTTP/1.1 OK\r\n\r\n', 'HPE_INVALID_CONSTANT'],
    ['HTTP/2 in an HTTP/1.1 answer', 'HTTP/2 200 OK\r\n\r\n', 'HPE_INVALID_CONSTANT'],
    ['a header line with no name', 'HTTP/1.1 200 OK\r\n: x\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['conflicting Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['a Content-Length that is not a number', 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\na', 'HPE_INVALID_CONTENT_LENGTH'],
    ['a status past 599', 'HTTP/1.1 600 What\r\nContent-Length: 0\r\n\r\n', 'EPROTO'],
    ['a NUL in a header value', 'HTTP/1.1 200 OK\r\nX-A: a\u0000b\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['a lone CR in a header value', 'HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['both Transfer-Encoding and Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['a transfer coding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'HPE_INVALID_TRANSFER_ENCODING'],
    ['chunked followed by another transfer coding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nok', 'HPE_INVALID_TRANSFER_ENCODING'],
    ['an identity transfer coding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok', 'HPE_INVALID_TRANSFER_ENCODING'],
    ['a DEL in a header value', 'HTTP/1.1 200 OK\r\nX-A: a\u007fb\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['a control byte in a header value', 'HTTP/1.1 200 OK\r\nX-A: a\u0001b\r\nContent-Length: 0\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['Content-Length after Transfer-Encoding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['endless interim responses', `${'HTTP/1.1 100 Continue\r\n\r\n'.repeat(17)}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n`, 'EPROTO'],
  ])('refuses %s with a coded error', async (_what, answer, code) => {
    const s = await rawServer((socket) => socket.write(answer));
    try {
      await expect(at(s.port)()).rejects.toMatchObject({ code });
    } finally {
      await s.close();
    }
  });

  it('fails the body, not the response, when the connection closes before the announced length or the chunked end', async () => {
    const s = await rawServer((socket, req) => {
      socket.end(req.includes('/chunked') ? 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel' : 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort');
    });
    try {
      await expect(text(await at(s.port)())).rejects.toMatchObject({ code: 'ECONNRESET' });
      await expect(text(await at(s.port, '127.0.0.1', '/chunked')())).rejects.toMatchObject({ code: 'ECONNRESET' });
    } finally {
      await s.close();
    }
  });

  it('refuses a bad chunk size', async () => {
    const s = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n'));
    try {
      await expect(text(await at(s.port)())).rejects.toMatchObject({ code: 'HPE_INVALID_CHUNK_SIZE' });
    } finally {
      await s.close();
    }
  });

  it('refuses a header value that would split the request, before connecting', async () => {
    const s = await rawServer((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    try {
      await expect(at(s.port)({ accept: 'x\r\nInjected: 1' })).rejects.toMatchObject({ code: 'ERR_INVALID_CHAR' });
      expect(s.connections()).toBe(0);
    } finally {
      await s.close();
    }
  });

  it('abort closes the connection: a pending response rejects with the reason, a body being read fails with it', async () => {
    let first = true;
    const s = await rawServer((socket) => {
      if (first) first = false;
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial');
    });
    try {
      const reason = new Error('given up');
      const url = new URL(`http://127.0.0.1:${s.port}/x`);
      const { startPinnedGet } = await import('./pinned-fetch.ts');
      const pending = startPinnedGet(url, { headers: {}, addresses: [{ address: '127.0.0.1', family: 4 }] });
      setTimeout(() => pending.abort(reason), 20);
      await expect(pending.response).rejects.toBe(reason);
      const res = await pinnedGet(url, { headers: {}, addresses: [{ address: '127.0.0.1', family: 4 }] });
      setTimeout(() => res.abort(reason), 20);
      await expect(text(res)).rejects.toBe(reason);
      expect(s.connections()).toBe(2);
    } finally {
      await s.close();
    }
  });
});

describe('pinnedGet: large bodies', () => {
  it.each(['length', 'chunked'])('reads a 4 MiB body (%s) whole, read slowly, and keeps the connection', async (framing) => {
    const big = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const s = await rawServer((socket) => {
      if (framing === 'length') socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`);
      else socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n`);
      socket.write(big);
      if (framing === 'chunked') socket.write('\r\n0\r\n\r\n');
    });
    try {
      const get = at(s.port);
      for (let round = 0; round < 2; round++) {
        const res = await get();
        const parts: Uint8Array[] = [];
        for await (const c of res.body!) {
          parts.push(c as Uint8Array);
          if (parts.length % 16 === 0) await new Promise((r) => setTimeout(r, 1));
        }
        expect(Buffer.concat(parts).equals(big)).toBe(true);
      }
      expect(s.connections()).toBe(1);
    } finally {
      await s.close();
    }
  });
});

describe('pinnedGet over TLS', () => {
  it('verifies the certificate against the URL host name (not the address it connects to), and keeps the connection alive', async () => {
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync, readFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const tls = await import('node:tls');
    const dir = mkdtempSync(join(tmpdir(), 'pinned-tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    let connections = 0;
    const open = new Set<net.Socket>();
    const srv = tls.createServer({ key: readFileSync(join(dir, 'key.pem')), cert }, (socket) => {
      socket.on('error', () => {});
      let buf = '';
      socket.on('data', (d) => {
        buf += d.toString('latin1');
        while (buf.includes('\r\n\r\n')) {
          buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure');
        }
      });
    });
    srv.on('connection', (socket: net.Socket) => {
      connections++;
      open.add(socket);
      socket.on('close', () => open.delete(socket));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const get = (host: string) => pinnedGet(new URL(`https://${host}:${port}/x`), { headers: {}, signal: AbortSignal.timeout(5_000), addresses: [{ address: '127.0.0.1', family: 4 }] });
    const defaults = tls.getCACertificates('default');
    try {
      // Not trusted yet: a self-signed certificate is refused.
      await expect(get('localhost')).rejects.toMatchObject({ code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
      tls.setDefaultCACertificates([...defaults, cert]);
      expect(await text(await get('localhost'))).toBe('secure');
      expect(await text(await get('localhost'))).toBe('secure');
      // The same address under another name: the certificate does not name it.
      await expect(get('pds.other.test')).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      expect(connections).toBe(3);
    } finally {
      tls.setDefaultCACertificates(defaults);
      for (const socket of open) socket.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});

describe('pinnedGet: header names', () => {
  it('takes headers named like Object properties as headers (no prototype to collide with), and a header with an empty value', async () => {
    const s = await rawServer((socket) => socket.write('HTTP/1.1 200\r\nConstructor: a\r\nToString: b\r\n__proto__: c\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n'));
    try {
      const res = await at(s.port)();
      expect(res.status).toBe(200);
      expect(Object.entries(res.headers)).toEqual([['constructor', 'a'], ['tostring', 'b'], ['__proto__', 'c'], ['x-empty', ''], ['content-length', '0']]);
    } finally {
      await s.close();
    }
  });
});
