/**
 * Hostile servers and hostile identifiers, fed as classes: every member must come out as a
 * named NetError (or UsageError/zod issue at the edges), never as a TypeError or RangeError,
 * and a slow server must not hold a read past its deadline.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BackfillSettings, Did } from '../../backfill/settings.ts';
import { backfillInputFromArgs } from '../../cli/backfill-commands.ts';
import { didProblem } from './did.ts';
import {
  BadRedirectError,
  DeadlineError,
  ForbiddenAddressError,
  IdentityError,
  MAX_ERROR_TEXT,
  NetError,
  XrpcError,
  outcomeOf,
} from './errors.ts';
import { didDocumentUrl, resolveDid } from './identity.ts';
import { getRepoBytes, listAllRepos, listRepos } from './sync.ts';

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz';
const servers: http.Server[] = [];

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

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

function expectNamed(err: unknown): void {
  expect(err, String(err)).toBeInstanceOf(NetError);
  expect(['TypeError', 'SyntaxError', 'RangeError']).not.toContain((err as Error).constructor.name);
  expect((err as Error).message.length).toBeLessThanOrEqual(MAX_ERROR_TEXT);
}

describe('item 2: malformed redirects are named errors', () => {
  const LOCATIONS = ['http://[', 'http://%zz/', 'http://127.0.0.1:99999/', 'http://[::1', 'https://a b/', 'http://example.com:-1/', 'http://x'.padEnd(5000, 'y') + ':70000/'];

  for (const location of LOCATIONS) {
    it(`getRepo redirected to ${JSON.stringify(location.slice(0, 40))}`, async () => {
      const pds = await serve((_req, res) => {
        res.writeHead(302, { location });
        res.end();
      });
      const err = await caught(getRepoBytes(pds, DID, { ...local, maxBytes: 1024 }));
      expectNamed(err);
      expect(err).toBeInstanceOf(BadRedirectError);
      expect(outcomeOf(err).kind).toBe('error');
    });
  }

  it('a DID document fetch redirected to each of them, and to another scheme', async () => {
    for (const location of [...LOCATIONS, 'file:///etc/passwd', 'gopher://127.0.0.1:70/']) {
      const plc = await serve((_req, res) => {
        res.writeHead(301, { location });
        res.end();
      });
      const err = await caught(resolveDid(DID, { ...local, plcUrl: plc }));
      expectNamed(err);
      expect([BadRedirectError, ForbiddenAddressError].some((c) => err instanceof c)).toBe(true);
    }
  });
});

describe('item 2: one DID syntax check, the same everywhere', () => {
  const BAD = [
    'did:web:localhost%3A99999',
    'did:web:localhost%3A0',
    'did:web:localhost%3A123456',
    'did:web:example.com%3A8443',
    'did:web:example.com:users:alice',
    'did:web:%zz.com',
    'did:web:exa mple.com',
    `did:web:${'a'.repeat(250)}.com`,
    'did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ',
    'did:plc:ewvi7nxzyoun6zhxrhs64oi',
    'did:plc:ewvi7nxzyoun6zhxrhs64oiz0',
    'did:plc:ewvi7nxzyoun6zhxrhs64oi1',
    'did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme',
    'DID:PLC:ewvi7nxzyoun6zhxrhs64oiz',
    '',
    `did:plc:${'a'.repeat(5000)}`,
  ];
  const GOOD = [DID, 'did:web:example.com', 'did:web:pds.sub.example.co.uk', 'did:web:localhost%3A1234', 'did:web:localhost%3a65535', 'did:web:localhost'];

  it(`${BAD.length} bad DIDs are refused by the check, workflow input, the CLI and the resolver alike`, async () => {
    for (const did of BAD) {
      expect(didProblem(did), did).toBeTypeOf('string');
      expect(Did.safeParse(did).success, did).toBe(false);
      expect(() => backfillInputFromArgs([did]), did).toThrow(/did|DID|host|port/);
      expect(() => didDocumentUrl(did, { plcUrl: 'https://plc.example', allowPrivate: true }), did).toThrow(IdentityError);
      const err = await caught(resolveDid(did, { ...local, plcUrl: 'http://unused.invalid' }));
      expect(err, did).toBeInstanceOf(IdentityError);
      expect((err as IdentityError).problem).toBe('invalid-did');
    }
  });

  it(`${GOOD.length} good DIDs pass every one of them`, () => {
    for (const did of GOOD) {
      expect(didProblem(did), did).toBeUndefined();
      expect(Did.safeParse(did).success, did).toBe(true);
      expect(backfillInputFromArgs([did]).input.source).toEqual({ kind: 'dids', dids: [did] });
      expect(didDocumentUrl(did, { plcUrl: 'https://plc.example', allowPrivate: true })).toBeInstanceOf(URL);
    }
    expect(BackfillSettings.parse({}).maxCarBytes).toBeGreaterThan(0);
  });
});

describe('item 2: a hostile listRepos costs only its bad entries', () => {
  const entry = (did: unknown) => ({ did, head: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm', rev: '3l3qo2vutsw2b' });
  const HOSTILE: unknown[] = [
    entry('did:web:localhost%3A99999'),
    entry('did:plc:short'),
    entry(`did:plc:${'a'.repeat(100_000)}`),
    entry(42),
    entry(null),
    { head: 'x', rev: 'y' },
    { did: DID }, // no head or rev
    null,
    'did:plc:ewvi7nxzyoun6zhxrhs64oiz',
    [entry(DID)],
    entry('did:web:example.com:path'),
    entry('did:web:%zz'),
  ];

  it(`skips and counts ${HOSTILE.length} bad entries, keeps the good ones, and goes on past a page of only bad ones`, async () => {
    const good = ['did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 'did:web:example.com', 'did:plc:bbbbbbbbbbbbbbbbbbbbbbbb'];
    const pds = await serve((req, res) => {
      const cursor = new URL(req.url!, 'http://x').searchParams.get('cursor');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (cursor === null) res.end(JSON.stringify({ cursor: 'p2', repos: [entry(good[0]), ...HOSTILE.slice(0, 6), entry(good[1])] }));
      else if (cursor === 'p2') res.end(JSON.stringify({ cursor: 'p3', repos: HOSTILE.slice(6) }));
      else if (cursor === 'p3') res.end(JSON.stringify({ cursor: 'p4', repos: [entry(good[2])] }));
      else res.end(JSON.stringify({ repos: [] }));
    });
    const first = await listRepos(pds, local);
    expect(first.repos.map((r) => r.did)).toEqual([good[0], good[1]]);
    expect(first.skipped.map((s) => s.index)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const s of first.skipped) expect(s.reason.length).toBeLessThan(400);

    const pages = [];
    for await (const page of listAllRepos(pds, local)) pages.push(page);
    expect(pages.flatMap((p) => p.repos.map((r) => r.did))).toEqual(good);
    expect(pages.reduce((n, p) => n + p.skipped.length, 0)).toBe(HOSTILE.length);
  });
});

describe('item 1: a DID document nested deep is a named error', () => {
  const nest = (depth: number, open: string, close: string, inner = '0') => open.repeat(depth) + inner + close.repeat(depth);
  const ENDPOINTS = [nest(10_000, '[', ']'), nest(10_000, '{"a":', '}'), nest(30_000, '[', ']')];
  it(`refuses ${ENDPOINTS.length} documents whose fields nest thousands deep as IdentityError`, async () => {
    for (const [i, endpoint] of ENDPOINTS.entries()) {
      const body = `{"id":"${DID}","alsoKnownAs":["at://alice.test"],"service":[{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":${endpoint}}]}`;
      const plc = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      });
      const err = await caught(resolveDid(DID, { ...local, plcUrl: plc }));
      expectNamed(err);
      expect(err, `document ${i}`).toBeInstanceOf(IdentityError);
    }
  });
});

describe('item 3: every remote read has a total deadline', () => {
  /** Sends `body` one byte every `everyMs` after the headers. */
  const drip = (everyMs: number, body = Buffer.alloc(1 << 20, 1)) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    let at = 0;
    const timer = setInterval(() => {
      if (res.destroyed || at >= body.length) return clearInterval(timer);
      res.write(body.subarray(at, ++at));
    }, everyMs);
    res.on('close', () => clearInterval(timer));
  };
  const tight = { ...local, idleTimeoutMs: 5000, deadlineMs: 600, minBytesPerSecond: 64 * 1024 };

  it('cuts off a getRepo that drips one byte at a time, though no chunk is ever late', async () => {
    const pds = await serve(drip(20));
    const t0 = performance.now();
    const err = await caught(getRepoBytes(pds, DID, { ...tight, maxBytes: 1 << 20 }));
    expect(err).toBeInstanceOf(DeadlineError);
    expect((err as DeadlineError).code).toBe('EDEADLINE');
    expect(outcomeOf(err)).toMatchObject({ kind: 'transport', code: 'EDEADLINE' });
    expect((err as Error).message).toMatch(/too slow/);
    expect(performance.now() - t0).toBeLessThan(4000);
  });

  it('cuts off a DID document and a listing that drip', async () => {
    const slow = await serve(drip(20, Buffer.from(JSON.stringify({ id: DID, padding: 'x'.repeat(1000) }))));
    expect(await caught(resolveDid(DID, { ...tight, plcUrl: slow }))).toBeInstanceOf(DeadlineError);
    expect(await caught(listRepos(slow, tight))).toBeInstanceOf(DeadlineError);
  });

  it('cuts off headers that come after the deadline but within the header timeout', async () => {
    const late = await serve(async (_req, res) => {
      await new Promise((r) => setTimeout(r, 1500));
      res.writeHead(200);
      res.end('{}');
    });
    const err = await caught(getRepoBytes(late, DID, { ...tight, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(DeadlineError);
  });

  it('counts redirect hops against the same deadline', async () => {
    let hops = 0;
    const pds = await serve(async (req, res) => {
      hops++;
      await new Promise((r) => setTimeout(r, 250));
      res.writeHead(302, { location: `/hop${hops}` });
      res.end();
    });
    const err = await caught(getRepoBytes(pds, DID, { ...tight, maxBytes: 1024 }));
    expect(err).toBeInstanceOf(DeadlineError);
    expect(hops).toBeLessThanOrEqual(3);
  });

  it('lets a large body that keeps the minimum rate run past the base deadline', async () => {
    const size = 4 << 20;
    const pds = await serve(async (_req, res) => {
      res.writeHead(200);
      // About 4 MB/s for a second: longer than the 600 ms deadline, far above 64 KiB/s.
      for (let sent = 0; sent < size; sent += 256 * 1024) {
        res.write(Buffer.alloc(256 * 1024, 2));
        await new Promise((r) => setTimeout(r, 60));
      }
      res.end();
    });
    const t0 = performance.now();
    const bytes = await getRepoBytes(pds, DID, { ...tight, maxBytes: size });
    expect(bytes.length).toBe(size);
    expect(performance.now() - t0).toBeGreaterThan(600);
  });

  it('a fixed deadline (rate 0) cuts off even a steady large body', async () => {
    const pds = await serve(async (_req, res) => {
      res.writeHead(200);
      for (let i = 0; i < 40 && !res.destroyed; i++) {
        res.write(Buffer.alloc(64 * 1024, 3));
        await new Promise((r) => setTimeout(r, 50));
      }
      res.end();
    });
    expect(await caught(getRepoBytes(pds, DID, { ...tight, minBytesPerSecond: 0, maxBytes: 1 << 24 }))).toBeInstanceOf(DeadlineError);
  });
});

describe('item 7: error text from remote input is bounded', () => {
  it('bounds XRPC messages, document ids and redirect targets in what is recorded', async () => {
    const huge = 'z'.repeat(200_000);
    const xrpc = await serve((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: huge, message: huge }));
    });
    const e1 = await caught(getRepoBytes(xrpc, DID, { ...local, maxBytes: 1024 }));
    expect(e1).toBeInstanceOf(XrpcError);
    const doc = await serve((_req, res) => {
      res.writeHead(200);
      res.end(JSON.stringify({ id: `did:plc:${huge.slice(0, 50_000)}` }));
    });
    const e2 = await caught(resolveDid(DID, { ...local, plcUrl: doc }));
    expect(e2).toBeInstanceOf(IdentityError);
    for (const e of [e1, e2]) expectNamed(e);
  });
});
