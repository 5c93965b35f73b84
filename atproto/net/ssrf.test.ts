/**
 * Issue 12 item 6: the address guard holds for the connection itself (no second lookup: DNS
 * rebinding) and for the IPv6 transition ranges that lead back to private IPv4 or local use.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type LookupFn, checkHostAllowed, forbiddenRangeOf } from './address-guard.ts';
import { ForbiddenAddressError, NetError, TransportError } from './errors.ts';
import { resolveDid } from './identity.ts';
import { getRepoBytes } from './sync.ts';

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz';
const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

/** A loopback server counting the requests that reach it. */
async function loopback(handler?: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<{ port: number; hits: () => number }> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    if (handler) handler(req, res);
    else {
      res.writeHead(200);
      res.end('pinned');
    }
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, hits: () => hits };
}

/** A name server whose answers change from one lookup to the next; counts lookups. */
function rebinding(...answers: string[][]): LookupFn & { calls: number } {
  const lookup: LookupFn = async () => {
    const answer = answers[Math.min(fn.calls, answers.length - 1)]!;
    fn.calls++;
    return answer.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  const fn = Object.assign(lookup, { calls: 0 });
  return fn;
}

describe('IPv6 transition ranges are refused', () => {
  // Each embeds a private or loopback IPv4 address, or is reserved for local use.
  const TRANSITION: Array<[string, string]> = [
    ['::a00:1', 'IPv4-compatible'],
    ['::7f00:1', 'IPv4-compatible'],
    ['::ffff:0:a00:1', 'IPv4-translated (SIIT)'],
    ['::ffff:0:7f00:1', 'IPv4-translated (SIIT)'],
    ['64:ff9b:1::a00:1', 'local-use NAT64'],
    ['64:ff9b:1:ffff::1', 'local-use NAT64'],
    ['2002:a00:1::1', '6to4'],
    ['2002:7f00:1::', '6to4'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'Teredo'],
    ['2001::1', 'Teredo'],
    ['fec0::1', 'site-local'],
    ['feff:ffff::1', 'site-local'],
    ['100::1', 'discard-only'],
    ['100::ffff:ffff:ffff:ffff', 'discard-only'],
  ];
  it(`names the range of ${TRANSITION.length} transition addresses, as literals and as DNS answers`, async () => {
    for (const [ip, range] of TRANSITION) {
      expect(forbiddenRangeOf(ip), ip).toBe(range);
      const literal = await checkHostAllowed(`http://[${ip}]/`, { allowPrivate: false }).catch((e: unknown) => e);
      expect(literal, ip).toBeInstanceOf(ForbiddenAddressError);
      const named = await checkHostAllowed('https://pds.example.com/', { allowPrivate: false, lookup: rebinding([ip]) }).catch((e: unknown) => e);
      expect(named, ip).toBeInstanceOf(ForbiddenAddressError);
      expect((named as ForbiddenAddressError).address).toBe(ip);
    }
  });

  it('still lets public IPv6 and the well-known NAT64 prefix of a public IPv4 address through', () => {
    for (const ip of ['2606:4700:4700::1111', '2001:4860:4860::8888', '64:ff9b::808:808', '2a00:1450::1']) expect(forbiddenRangeOf(ip), ip).toBeUndefined();
  });
});

describe('the connection goes to the checked address, and only there', () => {
  it('connects to what the guard resolved, without asking DNS again', async () => {
    const server = await loopback();
    const dns = rebinding(['127.0.0.1']);
    // `.invalid` never resolves through the system: only the checked answer can be used.
    const bytes = await getRepoBytes(`http://pinned.invalid:${server.port}`, DID, { allowPrivate: true, lookup: dns, timeoutMs: 5000, maxBytes: 1024 });
    expect(new TextDecoder().decode(bytes)).toBe('pinned');
    expect(dns.calls).toBe(1);
    expect(server.hits()).toBe(1);
  });

  const REBINDS: Array<[string, string[][]]> = [
    ['public, then loopback', [['192.0.2.10'], ['127.0.0.1']]],
    ['public, then private', [['192.0.2.11'], ['10.0.0.1']]],
    ['public, then IPv4-mapped loopback', [['192.0.2.12'], ['::ffff:127.0.0.1']]],
    ['public, then a 6to4 address of loopback', [['192.0.2.13'], ['2002:7f00:1::']]],
  ];
  for (const [name, answers] of REBINDS) {
    it(`a name that rebinds (${name}) never reaches the loopback server`, async () => {
      const server = await loopback();
      const dns = rebinding(...answers);
      const err = await getRepoBytes(`http://rebind.invalid:${server.port}`, DID, { allowPrivate: false, lookup: dns, timeoutMs: 700, deadlineMs: 2000, maxBytes: 1024 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NetError);
      expect(err).toBeInstanceOf(TransportError); // 192.0.2.0/24 (documentation) does not answer here
      expect(dns.calls).toBe(1);
      expect(server.hits()).toBe(0);
    });
  }

  it('pins every redirect hop, and a PLC directory fetch, the same way', async () => {
    const target = await loopback();
    const start = await loopback((_req, res) => {
      res.writeHead(302, { location: `http://rebind.invalid:${target.port}/xrpc/x` });
      res.end();
    });
    const names: Record<string, string[][]> = { 'start.invalid': [['127.0.0.1']], 'rebind.invalid': [['192.0.2.20'], ['127.0.0.1']] };
    const calls: Record<string, number> = {};
    const dns: LookupFn = async (host) => {
      calls[host] = (calls[host] ?? 0) + 1;
      const list = names[host]!;
      return list[Math.min(calls[host]! - 1, list.length - 1)]!.map((address) => ({ address, family: 4 }));
    };
    // allowPrivate lets the first hop reach loopback; the second hop's checked answer is the
    // public one, and the connection is held to it.
    const err = await getRepoBytes(`http://start.invalid:${start.port}`, DID, { allowPrivate: true, lookup: dns, timeoutMs: 700, deadlineMs: 2000, maxBytes: 1024 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect(calls).toEqual({ 'start.invalid': 1, 'rebind.invalid': 1 });
    expect(start.hits()).toBe(1);
    expect(target.hits()).toBe(0);

    const plcHits = await loopback();
    const plcDns = rebinding(['192.0.2.30'], ['127.0.0.1']);
    const plcErr = await resolveDid(DID, { plcUrl: `http://plc.invalid:${plcHits.port}`, allowPrivate: false, lookup: plcDns, timeoutMs: 700, deadlineMs: 2000 }).catch((e: unknown) => e);
    expect(plcErr).toBeInstanceOf(TransportError);
    expect(plcDns.calls).toBe(1);
    expect(plcHits.hits()).toBe(0);
  });
});
