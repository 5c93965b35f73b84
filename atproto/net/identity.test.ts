import { P256PrivateKeyExportable, Secp256k1PrivateKeyExportable, parseDidKey } from '@atcute/crypto';
import { toBase58Btc } from '@atcute/multibase';
import { ECDH } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { atprotoIdentityOf } from './did-document.ts';
import { ForbiddenAddressError, IdentityError, type IdentityProblem, RateLimitedError, ResponseTooLargeError, outcomeOf } from './errors.ts';
import { IdentityCache } from './identity-cache.ts';
import { didDocumentUrl, resolveDid } from './identity.ts';

const DID = 'did:plc:ewvi7nxzyoun6zhxrhs64oiz';
const OTHER = 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa';
let key: Secp256k1PrivateKeyExportable;
let didKey: string;
let multikey: string;

beforeAll(async () => {
  key = await Secp256k1PrivateKeyExportable.createKeypair();
  didKey = await key.exportPublicKey('did');
  multikey = await key.exportPublicKey('multikey');
});

/** A DID document as the PLC directory serves it, with overrides. */
function doc(did: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1'],
    id: did,
    alsoKnownAs: ['at://Alice.Test'],
    verificationMethod: [{ id: `${did}#atproto`, type: 'Multikey', controller: did, publicKeyMultibase: multikey }],
    service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: 'https://pds.example.com' }],
    ...over,
  };
}

function problemOf(fn: () => unknown): { problem: IdentityProblem; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError);
    return { problem: (err as IdentityError).problem, message: (err as Error).message };
  }
  throw new Error('expected an IdentityError');
}

describe('atprotoIdentityOf', () => {
  const src = 'https://plc.example/did:plc:x';

  it('reads the PDS origin, the handle and the signing key in both forms', () => {
    expect(atprotoIdentityOf(DID, doc(DID), src)).toEqual({
      did: DID,
      pds: 'https://pds.example.com',
      handle: 'alice.test',
      signingKey: didKey,
      signingMultikey: multikey,
      signingKeyType: 'secp256k1',
      signingKeyPoint: parseDidKey(didKey).publicKeyBytes,
    });
  });

  it('accepts a P-256 key and the legacy key types, giving the same multikey', async () => {
    const p256 = await P256PrivateKeyExportable.createKeypair();
    const p256Multikey = await p256.exportPublicKey('multikey');
    const vm = (type: string, publicKeyMultibase: string) => ({ verificationMethod: [{ id: '#atproto', type, controller: DID, publicKeyMultibase }] });
    const p256Point = parseDidKey(await p256.exportPublicKey('did')).publicKeyBytes;
    expect(atprotoIdentityOf(DID, doc(DID, vm('Multikey', p256Multikey)), src)).toMatchObject({ signingMultikey: p256Multikey, signingKeyType: 'p256', signingKeyPoint: p256Point });

    // Legacy types carry the raw key, which the PLC directory's older documents leave uncompressed.
    const raw = await key.exportPublicKey('raw');
    const uncompressed = ECDH.convertKey(raw, 'secp256k1', undefined, undefined, 'uncompressed') as Buffer;
    expect(uncompressed.length).toBe(65);
    for (const bytes of [raw, uncompressed]) {
      const legacy = atprotoIdentityOf(DID, doc(DID, vm('EcdsaSecp256k1VerificationKey2019', `z${toBase58Btc(bytes)}`)), src);
      // The point the signature check takes is the compressed one whichever form the document held.
      expect(legacy).toMatchObject({ signingMultikey: multikey, signingKey: didKey, signingKeyType: 'secp256k1', signingKeyPoint: parseDidKey(didKey).publicKeyBytes });
      expect(legacy.signingKeyPoint).toHaveLength(33);
    }
    const p256Raw = ECDH.convertKey(await p256.exportPublicKey('raw'), 'prime256v1', undefined, undefined, 'uncompressed') as Buffer;
    const legacyP256 = atprotoIdentityOf(DID, doc(DID, vm('EcdsaSecp256r1VerificationKey2019', `z${toBase58Btc(p256Raw)}`)), src);
    expect(legacyP256).toMatchObject({ signingMultikey: p256Multikey, signingKeyType: 'p256', signingKeyPoint: p256Point });

    const r = problemOf(() => atprotoIdentityOf(DID, doc(DID, vm('EcdsaSecp256k1VerificationKey2019', `z${toBase58Btc(raw.subarray(0, 20))}`)), src));
    expect(r.problem).toBe('bad-signing-key');
    expect(r.message).toMatch(/20 key bytes/);
  });

  it('drops credentials from the PDS endpoint and ignores an invalid handle', () => {
    const id = atprotoIdentityOf(
      DID,
      doc(DID, {
        alsoKnownAs: ['https://alice.example', 'at://not a handle'],
        service: [{ id: `${DID}#atproto_pds`, type: 'AtprotoPersonalDataServer', serviceEndpoint: 'https://user:pw@pds.example.com:8443/' }],
      }),
      src,
    );
    expect(id.pds).toBe('https://pds.example.com:8443');
    expect(id.handle).toBeUndefined();
  });

  it('says so when the document is for another DID', () => {
    const { problem, message } = problemOf(() => atprotoIdentityOf(DID, doc(OTHER), src));
    expect(problem).toBe('did-mismatch');
    expect(message).toContain(OTHER);
    expect(message).toContain(src);
    expect(outcomeOf(new IdentityError(DID, problem, message)).kind).toBe('error');
  });

  it('names a missing or unusable PDS service', () => {
    let r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_labeler', type: 'AtprotoLabeler', serviceEndpoint: 'https://l.example' }] }), src));
    expect(r.problem).toBe('no-pds');
    expect(r.message).toMatch(/no #atproto_pds service \(services: #atproto_labeler\)/);
    expect(r.message).toContain(src);

    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: undefined }), src));
    expect(r.message).toMatch(/services: none/);

    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', type: 'Other', serviceEndpoint: 'https://p.example' }] }), src));
    expect(r.message).toMatch(/type "Other", not AtprotoPersonalDataServer/);

    for (const serviceEndpoint of ['ftp://p.example', 'https://p.example/pds', 'not a url', { uri: 'https://p.example' }]) {
      r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint }] }), src));
      expect(r.problem).toBe('no-pds');
      expect(r.message).toMatch(/serviceEndpoint .* not an http\(s\) URL/);
    }
  });

  it('reads each endpoint the same the second time (origins are remembered), refusals included', () => {
    const pdsOf = (serviceEndpoint: unknown) => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint }] }), src).pds;
    for (let round = 0; round < 2; round++) {
      expect(pdsOf('https://u:pw@pds.example.com:443/')).toBe('https://pds.example.com');
      expect(pdsOf('HTTPS://PDS.Example.com')).toBe('https://pds.example.com');
      expect(pdsOf('http://pds.example.com:8080')).toBe('http://pds.example.com:8080');
      expect(problemOf(() => pdsOf('https://pds.example.com/pds')).problem).toBe('no-pds');
      // Past the remembered length, read every time, the same way.
      expect(pdsOf(`https://${'a'.repeat(250)}.example.com`)).toBe(`https://${'a'.repeat(250)}.example.com`);
      expect(problemOf(() => pdsOf(`https://${'a'.repeat(250)}.example.com/x`)).problem).toBe('no-pds');
    }
  });

  it('names a missing or unusable signing key', () => {
    let r = problemOf(() =>
      atprotoIdentityOf(DID, doc(DID, { verificationMethod: [{ id: '#atproto_label', type: 'Multikey', controller: DID, publicKeyMultibase: multikey }] }), src),
    );
    expect(r.problem).toBe('no-signing-key');
    expect(r.message).toMatch(/no #atproto verification method \(verificationMethod: #atproto_label\)/);

    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { verificationMethod: [{ id: '#atproto', type: 'Multikey', controller: DID }] }), src));
    expect(r.problem).toBe('no-signing-key');
    expect(r.message).toMatch(/has no publicKeyMultibase/);

    // An Ed25519 multikey (0xed01): well formed, but not a key atproto signs commits with.
    const ed25519 = `z${toBase58Btc(new Uint8Array([0xed, 0x01, ...new Uint8Array(32).fill(1)]))}`;
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { verificationMethod: [{ id: '#atproto', type: 'Multikey', controller: DID, publicKeyMultibase: ed25519 }] }), src));
    expect(r.problem).toBe('bad-signing-key');
    expect(r.message).toMatch(/not a usable secp256k1 or P-256 key/);
  });

  it('explains a malformed document by path', () => {
    let r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { verificationMethod: { id: '#atproto' } }), src));
    expect(r.problem).toBe('bad-document');
    expect(r.message).toMatch(/verificationMethod: /);
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', serviceEndpoint: 'https://p.example' }] }), src));
    expect(r.message).toMatch(/service\[0\]\.type/);
    r = problemOf(() => atprotoIdentityOf(DID, [], src));
    expect(r.message).toMatch(/\(document\)/);
    // Shapes the schema refuses are refused, with the schema's word on where.
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { alsoKnownAs: ['at://a.example', 7] }), src));
    expect(r.problem).toBe('bad-document');
    expect(r.message).toMatch(/alsoKnownAs\[1\]/);
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', type: ['AtprotoPersonalDataServer', null], serviceEndpoint: 'https://p.example' }] }), src));
    expect(r.problem).toBe('bad-document');
    expect(r.message).toMatch(/service\[0\]\.type/);
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { alsoKnownAs: ['at://a.example', 7] }), src));
    expect(r.problem).toBe('bad-document');
    expect(r.message).toMatch(/alsoKnownAs\[1\]/);
    r = problemOf(() => atprotoIdentityOf(DID, doc(DID, { service: [{ id: '#atproto_pds', type: ['AtprotoPersonalDataServer', null], serviceEndpoint: 'https://p.example' }] }), src));
    expect(r.problem).toBe('bad-document');
    expect(r.message).toMatch(/service\[0\]\.type/);
  });
});

describe('didDocumentUrl', () => {
  const opts = { plcUrl: 'https://plc.directory', allowPrivate: false };
  it('maps did:plc to the directory and did:web to its well-known URL', () => {
    expect(didDocumentUrl(DID, opts).href).toBe(`https://plc.directory/${DID}`);
    expect(didDocumentUrl(DID, { ...opts, plcUrl: 'http://127.0.0.1:2582/' }).href).toBe(`http://127.0.0.1:2582/${DID}`);
    expect(didDocumentUrl('did:web:example.com', opts).href).toBe('https://example.com/.well-known/did.json');
    expect(didDocumentUrl('did:web:localhost%3A1234', opts).href).toBe('https://localhost:1234/.well-known/did.json');
    expect(didDocumentUrl('did:web:localhost%3A1234', { ...opts, allowPrivate: true }).href).toBe('http://localhost:1234/.well-known/did.json');
  });
  it('resolves ./<did> against the directory URL, whichever directory URL comes in turn', () => {
    // The directory's path, a missing trailing slash, a query or fragment: as relative resolution has it.
    for (const plcUrl of ['https://plc.example/mirror', 'https://plc.example/mirror/', 'https://plc.example/a/b?x=1#f', 'https://plc.directory', 'http://[::1]:2582']) {
      expect(didDocumentUrl(DID, { ...opts, plcUrl }).href, plcUrl).toBe(new URL(`./${DID}`, plcUrl.endsWith('/') ? plcUrl : `${plcUrl}/`).href);
    }
    expect(didDocumentUrl(DID, { ...opts, plcUrl: 'https://plc.example/mirror' }).href).toBe(`https://plc.example/mirror/${DID}`);
    expect(() => didDocumentUrl(DID, { ...opts, plcUrl: 'not a url' })).toThrow(TypeError);
  });
  it('refuses identifiers it cannot resolve', () => {
    for (const did of ['did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme', 'did:plc:short', 'did:web:example.com:users:alice', 'did:web:example.com%3A8443', 'alice.test']) {
      expect(problemOf(() => didDocumentUrl(did, opts)).problem, did).toBe('invalid-did');
    }
  });
});

describe('resolveDid over HTTP', () => {
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });

  /** A fake PLC directory (or did:web host) answering from a table of path → [status, body]. */
  type Routes = Record<string, [number, unknown, Record<string, string>?]>;
  async function directory(routes: Routes | ((port: number) => Routes)): Promise<{ url: string; port: number; paths: string[] }> {
    const paths: string[] = [];
    const server = http.createServer((req, res) => {
      paths.push(req.url!);
      const table = typeof routes === 'function' ? routes((server.address() as AddressInfo).port) : routes;
      const route = table[req.url!];
      if (!route) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'DID not registered' }));
        return;
      }
      const [status, body, headers] = route;
      res.writeHead(status, { 'content-type': 'application/did+ld+json', ...headers });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    });
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as AddressInfo).port;
    return { url: `http://127.0.0.1:${port}`, port, paths };
  }

  const base = { allowPrivate: true, timeoutMs: 5000 };

  it('resolves a did:plc through the directory', async () => {
    const plc = await directory({ [`/${DID}`]: [200, doc(DID)] });
    const id = await resolveDid(DID, { ...base, plcUrl: plc.url });
    // alice.test does not point back at the DID (no DNS record, no well-known document): unverified.
    expect(id).toMatchObject({ did: DID, pds: 'https://pds.example.com', handle: 'handle.invalid', claimedHandle: 'alice.test', handleVerified: false, signingKey: didKey });
    expect(plc.paths).toEqual([`/${DID}`]);
  });

  it('resolves a did:web on localhost with a port, over http only because private addresses are allowed', async () => {
    const web = await directory((port) => ({ '/.well-known/did.json': [200, doc(`did:web:localhost%3A${port}`)] }));
    const webDid = `did:web:localhost%3A${web.port}`;
    const id = await resolveDid(webDid, { ...base, plcUrl: 'http://unused.invalid' });
    expect(id.did).toBe(webDid);
    expect(id.pds).toBe('https://pds.example.com');
    expect(web.paths).toEqual(['/.well-known/did.json']);

    const refused = await resolveDid(webDid, { ...base, allowPrivate: false, plcUrl: 'http://unused.invalid' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ForbiddenAddressError);
    expect((refused as Error).message).toContain(`https://localhost:${web.port}/.well-known/did.json`);
  });

  it('refuses a PLC directory on a private address unless allowed', async () => {
    const plc = await directory({ [`/${DID}`]: [200, doc(DID)] });
    await expect(resolveDid(DID, { ...base, allowPrivate: false, plcUrl: plc.url })).rejects.toBeInstanceOf(ForbiddenAddressError);
    expect(plc.paths).toEqual([]);
  });

  it('classifies directory answers: 404, 410, 5xx, 429, not JSON, wrong document, too large', async () => {
    const dids = [...'bcdefgh'].map((c) => `did:plc:${c.repeat(24)}`);
    const plc = await directory({
      [`/${dids[1]}`]: [410, { message: 'DID not available' }],
      [`/${dids[2]}`]: [503, 'upstream down'],
      [`/${dids[3]}`]: [429, { message: 'slow down' }, { 'retry-after': '7' }],
      [`/${dids[4]}`]: [200, '<html>'],
      [`/${dids[5]}`]: [200, doc(OTHER)],
      [`/${dids[6]}`]: [200, doc(dids[6]!, { padding: 'x'.repeat(70 * 1024) })],
    });
    const attempt = (did: string) => resolveDid(did, { ...base, plcUrl: plc.url }).then(() => undefined, (e: unknown) => e);
    const problem = async (did: string) => {
      const err = await attempt(did);
      expect(err, did).toBeInstanceOf(IdentityError);
      return err as IdentityError;
    };
    expect((await problem(dids[0]!)).problem).toBe('not-found');
    expect((await problem(dids[0]!)).message).toMatch(/no DID document at http:\/\/127\.0\.0\.1:\d+\/did:plc:\w+ \(HTTP 404\)/);
    expect((await problem(dids[1]!)).problem).toBe('tombstoned');
    expect((await problem(dids[2]!)).message).toMatch(/HTTP 503/);
    const limited = await attempt(dids[3]!);
    expect(limited).toBeInstanceOf(RateLimitedError);
    expect((limited as RateLimitedError).retryAfterMs).toBe(7000);
    expect((await problem(dids[4]!)).message).toMatch(/not JSON/);
    expect((await problem(dids[5]!)).problem).toBe('did-mismatch');
    const big = await attempt(dids[6]!);
    expect(big).toBeInstanceOf(ResponseTooLargeError);
    expect((big as ResponseTooLargeError).limit).toBe(64 * 1024);
  });

  it('with fresh, reads the document every time and keeps no identity, but keeps its handle check', async () => {
    const plc = await directory({ [`/${DID}`]: [200, doc(DID)] });
    const cache = new IdentityCache();
    const lookups: string[] = [];
    const resolveTxt = async (name: string) => {
      lookups.push(name);
      return [[`did=${DID}`]];
    };
    const opts = { ...base, plcUrl: plc.url, cache, fresh: true, verifyHandle: { resolveTxt } };
    for (let i = 0; i < 3; i++) expect(await resolveDid(DID, opts)).toMatchObject({ did: DID, handle: 'alice.test', handleVerified: true, signingKey: didKey });
    expect(plc.paths).toHaveLength(3);
    expect(cache.size).toBe(0);
    expect(lookups).toEqual(['_atproto.alice.test']);
    // Not fresh, the same cache serves the identity once it holds it.
    await resolveDid(DID, { ...opts, fresh: false });
    await resolveDid(DID, { ...opts, fresh: false });
    expect(plc.paths).toHaveLength(4);
    expect(cache.size).toBe(1);
  });

  it('serves from the cache until invalidated, and never caches a failure', async () => {
    const plc = await directory({ [`/${DID}`]: [200, doc(DID)] });
    const cache = new IdentityCache();
    const opts = { ...base, plcUrl: plc.url, cache };
    await resolveDid(DID, opts);
    await resolveDid(DID, opts);
    expect(plc.paths).toHaveLength(1);
    expect(cache.invalidate(DID)).toBe(true);
    await resolveDid(DID, opts);
    expect(plc.paths).toHaveLength(2);

    await expect(resolveDid(OTHER, opts)).rejects.toBeInstanceOf(IdentityError);
    expect(cache.get(OTHER)).toBeUndefined();
    expect(cache.size).toBe(1);
  });
});

describe('IdentityCache', () => {
  const id = (did: string) => ({ did, pds: 'https://p.example', handle: undefined, signingKey: 'did:key:z', signingMultikey: 'z', signingKeyType: 'p256' as const, signingKeyPoint: new Uint8Array(33) });

  it('expires entries after the TTL', () => {
    let now = 1_000;
    const cache = new IdentityCache({ ttlMs: 100, now: () => now });
    cache.set(DID, id(DID));
    now += 99;
    expect(cache.get(DID)?.did).toBe(DID);
    now += 1;
    expect(cache.get(DID)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('evicts the least recently used entry past maxEntries', () => {
    const cache = new IdentityCache({ maxEntries: 2 });
    cache.set('did:a', id('did:a'));
    cache.set('did:b', id('did:b'));
    cache.get('did:a'); // a is now more recent than b
    cache.set('did:c', id('did:c'));
    expect(cache.get('did:b')).toBeUndefined();
    expect(cache.get('did:a')).toBeDefined();
    expect(cache.get('did:c')).toBeDefined();
    expect(cache.invalidate('did:b')).toBe(false);
  });
});
