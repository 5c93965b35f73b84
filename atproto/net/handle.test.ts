/**
 * Issue 12 item 6: handles are verified both ways, and an unverified one is stored as
 * `handle.invalid`. DNS answers are injected; the well-known document is served on loopback.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Secp256k1PrivateKeyExportable } from '@atcute/crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { INVALID_HANDLE, checkHandle } from './handle.ts';
import { resolveDid } from './identity.ts';
import { IdentityCache } from './identity-cache.ts';

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz';
const OTHER = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
const servers: http.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<number> {
  const server = http.createServer(handler);
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

const noTxt = async (): Promise<string[][]> => {
  throw Object.assign(new Error('no record'), { code: 'ENODATA' });
};
const txt = (...records: string[][]) => async () => records;
const at = (port: number) => (handle: string) => new URL(`http://127.0.0.1:${port}/.well-known/atproto-did?h=${handle}`);
const base = { allowPrivate: true, timeoutMs: 2000, deadlineMs: 1500, minBytesPerSecond: 0 };

describe('checkHandle', () => {
  const DNS: Array<[string, string[][], boolean]> = [
    ['one record naming the DID', [[`did=${DID}`]], true],
    ['the record split into chunks', [['did=did:plc:', 'ewvi7nxzyoun6zhxrhs64oiz']], true],
    ['the DID beside unrelated records', [['v=spf1 -all'], [`did=${DID}`]], true],
    ['a record naming another DID', [[`did=${OTHER}`]], false],
    ['two records that disagree', [[`did=${DID}`], [`did=${OTHER}`]], false],
  ];
  for (const [name, records, verified] of DNS) {
    it(`DNS TXT: ${name} → ${verified ? 'verified' : 'unverified'}`, async () => {
      // The well-known document would say otherwise: a DNS answer is decisive.
      const port = await serve((_req, res) => res.end(verified ? OTHER : DID));
      const check = await checkHandle('alice.example.com', DID, { ...base, resolveTxt: txt(...records), wellKnownUrl: at(port) });
      expect(check.verified).toBe(verified);
      if (check.verified) expect(check.via).toBe('dns');
    });
  }

  const HTTPS: Array<[string, (req: http.IncomingMessage, res: http.ServerResponse) => void, boolean]> = [
    ['the DID', (_q, r) => r.end(DID), true],
    ['the DID and a newline', (_q, r) => r.end(`${DID}\n`), true],
    ['another DID', (_q, r) => r.end(OTHER), false],
    ['404', (_q, r) => (r.writeHead(404), r.end(DID)), false],
    ['a body over the 2 KB cap', (_q, r) => r.end(`${DID}${' '.repeat(4096)}`), false],
    ['the DID dripped past the deadline', (_q, r) => {
      r.writeHead(200);
      let i = 0;
      const t = setInterval(() => (i < DID.length && !r.destroyed ? r.write(DID[i++]!) : clearInterval(t)), 100);
      r.on('close', () => clearInterval(t));
    }, false],
    ['a reset', (q) => q.socket.destroy(), false],
    ['the DID in an HTML page', (_q, r) => r.end(`<html>${DID}</html>`), false],
  ];
  for (const [name, handler, verified] of HTTPS) {
    it(`well-known document: ${name} → ${verified ? 'verified' : 'unverified'}`, async () => {
      const port = await serve(handler);
      const check = await checkHandle('alice.example.com', DID, { ...base, resolveTxt: noTxt, wellKnownUrl: at(port) });
      expect(check.verified, JSON.stringify(check)).toBe(verified);
      if (check.verified) expect(check.via).toBe('https');
      else expect(check.reason.length).toBeLessThan(1200);
    });
  }
});

describe('resolveDid stores only a verified handle', () => {
  let multikey: string;
  beforeAll(async () => {
    multikey = await (await Secp256k1PrivateKeyExportable.createKeypair()).exportPublicKey('multikey');
  });
  const doc = (handle: string) => ({
    id: DID,
    alsoKnownAs: [`at://${handle}`],
    verificationMethod: [{ id: `${DID}#atproto`, type: 'Multikey', controller: DID, publicKeyMultibase: multikey }],
    service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: 'https://pds.example.com' }],
  });

  it('keeps a handle that points back, and replaces one that does not with handle.invalid', async () => {
    const plc = await serve((_req, res) => res.end(JSON.stringify(doc('alice.example.com'))));
    const wellKnown = await serve((req, res) => res.end(req.url!.includes('alice.example.com') ? DID : OTHER));
    const good = await resolveDid(DID, { ...base, plcUrl: `http://127.0.0.1:${plc}`, verifyHandle: { resolveTxt: noTxt, wellKnownUrl: at(wellKnown) } });
    expect(good).toMatchObject({ handle: 'alice.example.com', handleVerified: true });
    const lying = await serve((_req, res) => res.end(JSON.stringify(doc('bob.example.com'))));
    const bad = await resolveDid(DID, { ...base, plcUrl: `http://127.0.0.1:${lying}`, verifyHandle: { resolveTxt: noTxt, wellKnownUrl: at(wellKnown) } });
    expect(bad).toMatchObject({ handle: INVALID_HANDLE, claimedHandle: 'bob.example.com', handleVerified: false });
    const unchecked = await resolveDid(DID, { ...base, plcUrl: `http://127.0.0.1:${lying}`, verifyHandle: false });
    expect(unchecked.handle).toBe('bob.example.com');
    expect(unchecked.handleVerified).toBeUndefined();
  });

  it('checks a handle once per TTL through the identity cache, even when the DID is re-read; a failed check sooner', async () => {
    let claimed = 'alice.example.com';
    const plc = await serve((_req, res) => res.end(JSON.stringify(doc(claimed))));
    const asked: string[] = [];
    let answer: string[][] = [[`did=${DID}`]];
    const resolveTxt = async (name: string) => (asked.push(name), answer);
    let now = 0;
    const cache = new IdentityCache({ ttlMs: 600_000, failedHandleTtlMs: 60_000, now: () => now });
    const opts = { ...base, plcUrl: `http://127.0.0.1:${plc}`, cache, verifyHandle: { resolveTxt, wellKnownUrl: at(1) } };
    expect(await resolveDid(DID, opts)).toMatchObject({ handle: 'alice.example.com', handleVerified: true });
    cache.invalidate(DID); // as backfill does before each repo: the document is read again
    expect(await resolveDid(DID, opts)).toMatchObject({ handle: 'alice.example.com', handleVerified: true });
    expect(asked).toEqual(['_atproto.alice.example.com']);

    // Another handle claimed is another check; past the TTL the first is checked again.
    claimed = 'carol.example.com';
    answer = [[`did=${OTHER}`]];
    cache.invalidate(DID);
    expect(await resolveDid(DID, opts)).toMatchObject({ handle: INVALID_HANDLE, claimedHandle: 'carol.example.com' });
    now += 59_000;
    cache.invalidate(DID);
    await resolveDid(DID, opts);
    expect(asked).toEqual(['_atproto.alice.example.com', '_atproto.carol.example.com']);
    // A failure is served for a minute only; success for the whole TTL.
    now += 2_000;
    answer = [[`did=${DID}`]];
    cache.invalidate(DID);
    expect(await resolveDid(DID, opts)).toMatchObject({ handle: 'carol.example.com', handleVerified: true });
    claimed = 'alice.example.com';
    cache.invalidate(DID);
    await resolveDid(DID, opts);
    expect(asked).toEqual(['_atproto.alice.example.com', '_atproto.carol.example.com', '_atproto.carol.example.com']);
    now += 600_000;
    cache.invalidate(DID);
    await resolveDid(DID, opts);
    expect(asked).toHaveLength(4);
  });
});
