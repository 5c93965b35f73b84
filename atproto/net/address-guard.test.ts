import { describe, expect, it } from 'vitest';
import { AddressCache, checkHostAllowed, forbiddenRangeOf, resolveWithTtl, type LookupFn, type TtlResolver } from './address-guard.ts';
import { ForbiddenAddressError, TransportError } from './errors.ts';

/** Resolves names from a table, like a DNS server an attacker controls. */
const fakeDns = (table: Record<string, string[]>): LookupFn => async (host) => {
  const addrs = table[host];
  if (!addrs) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return addrs.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};

async function refusal(url: string, lookup?: LookupFn): Promise<ForbiddenAddressError> {
  const err = await checkHostAllowed(url, { allowPrivate: false, lookup }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, url).toBeInstanceOf(ForbiddenAddressError);
  return err as ForbiddenAddressError;
}

describe('forbiddenRangeOf', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.254', 'carrier-grade NAT'],
    ['0.0.0.0', 'unspecified'],
    ['255.255.255.255', 'reserved'],
    ['224.0.0.1', 'multicast'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fe80::1', 'link-local'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['64:ff9b::169.254.169.254', 'link-local'],
  ])('%s is %s', (ip, label) => {
    expect(forbiddenRangeOf(ip)).toBe(label);
  });

  it.each(['8.8.8.8', '172.32.0.1', '172.15.255.255', '100.128.0.1', '192.169.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808'])(
    '%s is public',
    (ip) => {
      expect(forbiddenRangeOf(ip)).toBeUndefined();
    },
  );
});

describe('checkHostAllowed', () => {
  it('refuses literal private and loopback IPs, v4 and v6, naming the address and its kind', async () => {
    const e = await refusal('http://127.0.0.1:8080/xrpc/x');
    expect(e.address).toBe('127.0.0.1');
    expect(e.reason).toBe('loopback');
    expect(e.message).toMatch(/127\.0\.0\.1.*loopback.*not allow/);
    expect((await refusal('https://[::1]/')).reason).toBe('loopback');
    expect((await refusal('https://[fe80::1]/')).reason).toBe('link-local');
    expect((await refusal('https://[::ffff:192.168.0.1]/')).reason).toBe('private');
    expect((await refusal('http://169.254.169.254/latest/meta-data')).reason).toBe('link-local');
    expect((await refusal('http://100.64.1.1/')).reason).toBe('carrier-grade NAT');
    expect((await refusal('http://0.0.0.0:2583/')).reason).toBe('unspecified');
  });

  it('refuses a name that resolves to loopback, for real (localhost) and through hostile DNS', async () => {
    expect((await refusal('http://localhost:2583/')).reason).toBe('loopback');
    // One bad address among good ones is enough: fetch may connect to any of them.
    const dns = fakeDns({ 'pds.evil.example': ['93.184.216.34', '10.0.0.5'] });
    const e = await refusal('https://pds.evil.example/', dns);
    expect(e.address).toBe('10.0.0.5');
    expect(e.reason).toBe('private');
  });

  it('passes public addresses and names', async () => {
    const dns = fakeDns({ 'pds.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'] });
    const u = await checkHostAllowed('https://pds.example.com/xrpc/x', { allowPrivate: false, lookup: dns });
    expect(u.host).toBe('pds.example.com');
    await expect(checkHostAllowed('https://8.8.8.8/', { allowPrivate: false })).resolves.toBeInstanceOf(URL);
  });

  it('lets everything http(s) through with allowPrivate', async () => {
    await expect(checkHostAllowed('http://127.0.0.1:1234/', { allowPrivate: true })).resolves.toBeInstanceOf(URL);
    await expect(checkHostAllowed('http://[::1]:1234/', { allowPrivate: true })).resolves.toBeInstanceOf(URL);
  });

  it('refuses schemes other than http and https, even with allowPrivate', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://example.com/', 'gopher://x/']) {
      const err = await checkHostAllowed(url, { allowPrivate: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ForbiddenAddressError);
      expect((err as Error).message).toMatch(/scheme/);
    }
  });

  it('keeps credentials out of the message', async () => {
    const e = await refusal('http://admin:hunter2@127.0.0.1/');
    expect(e.message).not.toContain('hunter2');
    expect(e.url).toBe('http://127.0.0.1/');
  });

  it('turns a name that does not resolve into a TransportError with the DNS code', async () => {
    const err = await checkHostAllowed('https://nowhere.example/', { allowPrivate: false, lookup: fakeDns({}) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).code).toBe('ENOTFOUND');
    expect((err as TransportError).kind).toBe('transport');
  });
});

describe('resolveWithTtl', () => {
  /** A DNS server's answers per record type; a name it lacks is NXDOMAIN, a type it lacks NODATA. */
  const resolveAddresses = async (hostname: string, via: TtlResolver) => (await resolveWithTtl(hostname, via)).addresses;
  const fakeResolver = (table: Record<string, { a?: string[]; aaaa?: string[] }>, asked: string[] = []): TtlResolver => {
    const answer = (host: string, type: 'a' | 'aaaa') => {
      asked.push(`${type} ${host}`);
      const entry = table[host];
      if (!entry) return Promise.reject(Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: 'ENOTFOUND' }));
      const list = entry[type];
      return list ? Promise.resolve(list.map((address) => ({ address, ttl: 300 }))) : Promise.reject(Object.assign(new Error(`query ENODATA ${host}`), { code: 'ENODATA' }));
    };
    return { resolve4: (h) => answer(h, 'a'), resolve6: (h) => answer(h, 'aaaa') };
  };

  it('asks DNS for both families and returns every address', async () => {
    const asked: string[] = [];
    const dns = fakeResolver({ 'pds.example.com': { a: ['93.184.216.34'], aaaa: ['2606:2800:220:1::1'] }, 'v6.example.com': { aaaa: ['2001:db8::1'] } }, asked);
    expect(await resolveAddresses('pds.example.com', dns)).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ]);
    expect(asked.sort()).toEqual(['a pds.example.com', 'aaaa pds.example.com']);
    expect(await resolveAddresses('v6.example.com', dns)).toEqual([{ address: '2001:db8::1', family: 6 }]);
  });

  it('fails with the DNS code when neither family has an address', async () => {
    const dns = fakeResolver({ 'mx-only.example.com': {} });
    await expect(resolveAddresses('nowhere.example', dns)).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(resolveAddresses('mx-only.example.com', dns)).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it("returns every address and the least TTL of the records", async () => {
    const via = {
      resolve4: async () => [{ address: '192.0.2.1', ttl: 120 }, { address: '192.0.2.2', ttl: 60 }],
      resolve6: async () => [{ address: '2001:db8::1', ttl: 90 }],
    };
    expect(await resolveWithTtl('pds.example.com', via)).toEqual({
      addresses: [
        { address: '192.0.2.1', family: 4 },
        { address: '192.0.2.2', family: 4 },
        { address: '2001:db8::1', family: 6 },
      ],
      ttlSeconds: 60,
    });
  });

  it('leaves local names to the hosts file, not DNS', async () => {
    const asked: string[] = [];
    const found = await resolveAddresses('localhost', fakeResolver({}, asked));
    expect(found.map((a) => a.address)).toContain(found.some((a) => a.family === 4) ? '127.0.0.1' : '::1');
    expect(asked).toEqual([]);
  });
});

describe('AddressCache', () => {
  const answer = (address: string, ttlSeconds: number) => ({ addresses: [{ address, family: 4 }], ttlSeconds });

  it('keeps an answer for its TTL (capped), then asks again', async () => {
    let now = 1_000_000;
    const asked: string[] = [];
    const cache = new AddressCache(
      async (h) => {
        asked.push(h);
        return answer(`192.0.2.${asked.length}`, h === 'long.example' ? 86_400 : 30);
      },
      { maxTtlMs: 60_000, now: () => now },
    );
    expect(await cache.lookup('pds.example')).toEqual([{ address: '192.0.2.1', family: 4 }]);
    now += 29_000;
    expect(await cache.lookup('pds.example')).toEqual([{ address: '192.0.2.1', family: 4 }]);
    now += 1_000;
    expect(await cache.lookup('pds.example')).toEqual([{ address: '192.0.2.2', family: 4 }]);
    await cache.lookup('long.example');
    now += 60_000; // a day's TTL is kept no longer than the cap
    await cache.lookup('long.example');
    expect(asked).toEqual(['pds.example', 'pds.example', 'long.example', 'long.example']);
  });

  it('shares one lookup among the requests that ask at once; keeps neither a failure nor a TTL of 0', async () => {
    let calls = 0;
    let fail = true;
    const cache = new AddressCache(async (h) => {
      calls++;
      await new Promise((r) => setTimeout(r, 5));
      if (h === 'flaky.example' && fail) throw Object.assign(new Error('timeout'), { code: 'ETIMEOUT' });
      return answer('192.0.2.9', h === 'zero.example' ? 0 : 300);
    });
    const all = await Promise.all(Array.from({ length: 10 }, () => cache.lookup('pds.example')));
    expect(all.every((a) => a[0]!.address === '192.0.2.9')).toBe(true);
    expect(calls).toBe(1);
    await expect(cache.lookup('flaky.example')).rejects.toMatchObject({ code: 'ETIMEOUT' });
    fail = false;
    await expect(cache.lookup('flaky.example')).resolves.toHaveLength(1);
    await cache.lookup('zero.example');
    await cache.lookup('zero.example');
    expect(calls).toBe(5);
  });

  it('holds at most maxEntries names, dropping the oldest', async () => {
    const asked: string[] = [];
    const cache = new AddressCache(
      async (h) => {
        asked.push(h);
        return answer('192.0.2.1', 300);
      },
      { maxEntries: 2 },
    );
    for (const h of ['a.example', 'b.example', 'c.example', 'b.example', 'a.example']) await cache.lookup(h);
    expect(asked).toEqual(['a.example', 'b.example', 'c.example', 'a.example']);
  });
});

describe('AddressCache.peek', () => {
  it('answers only a fresh kept answer, and starts no lookup', async () => {
    let now = 0;
    let calls = 0;
    const cache = new AddressCache(
      async () => {
        calls++;
        return { addresses: [{ address: '192.0.2.1', family: 4 }], ttlSeconds: 10 };
      },
      { now: () => now },
    );
    expect(cache.peek('pds.example')).toBeUndefined();
    expect(calls).toBe(0);
    await cache.lookup('pds.example');
    expect(cache.peek('pds.example')).toEqual([{ address: '192.0.2.1', family: 4 }]);
    now += 10_000;
    expect(cache.peek('pds.example')).toBeUndefined();
    expect(calls).toBe(1);
  });
});
