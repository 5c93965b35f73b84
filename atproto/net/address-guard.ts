/**
 * Refuses URLs that would make a worker talk to its own network: a DID document or a PDS
 * listing is hostile input, and without this check it could point the backfill at loopback
 * services, cloud metadata (169.254.169.254) or the private LAN.
 *
 * The connection is pinned to the addresses checked here (`guardedAddresses`, used by
 * http.ts through pinned-fetch.ts), so a name that answers the check with a public address and
 * the connection with a private one (DNS rebinding) gets nowhere.
 */
import { Resolver, lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { ForbiddenAddressError, TransportError, redactUrl } from './errors.ts';

export interface LookupAddress {
  address: string;
  family: number;
}
/** Resolves a host name to every address it has (the shape of `dns.promises.lookup` with `all`). */
export type LookupFn = (hostname: string) => Promise<LookupAddress[]>;

export interface AddressPolicy {
  /** Allow loopback, private, link-local and other non-public addresses (tests, private deployments). */
  allowPrivate: boolean;
  /** Name resolution; default `resolveWithTtl` (DNS through c-ares), its answers kept for their TTL. Tests inject names here. */
  lookup?: LookupFn;
  /** Abandons the lookup (the answer is ignored) when aborted; rejects with the signal's reason. */
  signal?: AbortSignal;
}

// IPv4 ranges that are not public unicast. BlockList also matches their IPv4-mapped IPv6 forms
// (::ffff:127.0.0.1, ::ffff:7f00:1); the NAT64 forms (64:ff9b::/96) are added explicitly below.
const V4_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignment'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];
// Besides the IPv6 kinds of non-public address, every transition range whose addresses embed an
// IPv4 address or stand for local use: a router or stack may translate them onto the private
// IPv4 network (::10.0.0.1, 2002:0a00:0001::, a Teredo server's mapping), so the public IPv6
// form of a private address must not pass.
const V6_RANGES: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['::', 96, 'IPv4-compatible'],
  ['::ffff:0:0:0', 96, 'IPv4-translated (SIIT)'],
  ['64:ff9b:1::', 48, 'local-use NAT64'],
  ['100::', 64, 'discard-only'],
  ['2001::', 32, 'Teredo'],
  ['2002::', 16, '6to4'],
  ['fc00::', 7, 'private'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
];

// One list per label, so a refusal can say which kind of address it met.
const LISTS: ReadonlyArray<{ label: string; list: BlockList }> = (() => {
  const byLabel = new Map<string, BlockList>();
  const listFor = (label: string) => {
    let l = byLabel.get(label);
    if (!l) byLabel.set(label, (l = new BlockList()));
    return l;
  };
  for (const [net, prefix, label] of V4_RANGES) {
    listFor(label).addSubnet(net, prefix, 'ipv4');
    listFor(label).addSubnet(`64:ff9b::${net}`, 96 + prefix, 'ipv6');
  }
  for (const [net, prefix, label] of V6_RANGES) listFor(label).addSubnet(net, prefix, 'ipv6');
  return [...byLabel].map(([label, list]) => ({ label, list }));
})();

/** What kind of non-public address `ip` is (`loopback`, `private`, …), or undefined for a public one. */
export function forbiddenRangeOf(ip: string): string | undefined {
  const family = isIP(ip);
  if (family === 0) throw new TypeError(`not an IP address: ${ip}`);
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const { label, list } of LISTS) if (list.check(ip, type)) return label;
  return undefined;
}

const resolver = new Resolver({ timeout: 3000, tries: 2 });
const systemLookup: LookupFn = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/** Names the hosts file answers, not DNS: `localhost` and its subdomains, and single labels. */
const isLocalName = (host: string) => !host.includes('.') || host === 'localhost' || host.endsWith('.localhost');

/** The part of `dns.promises.Resolver` that `resolveWithTtl` uses: records with their TTLs. */
export interface TtlResolver {
  resolve4(hostname: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
  resolve6(hostname: string, options: { ttl: true }): Promise<Array<{ address: string; ttl: number }>>;
}

/**
 * Every A and AAAA address of `hostname`, asked of DNS directly through c-ares
 * (`dns.promises.Resolver`), not the system's `getaddrinfo`: that runs on libuv's thread pool
 * (four threads, shared with file I/O), and under a backfill's concurrency a few names that
 * time out held every thread for ~5 s, stalling every other lookup and file read behind them.
 * Local names (`localhost`, single labels) go to the system resolver, which reads the hosts file.
 * With the addresses, how long the answer may be kept: the least TTL of its records (0 for local
 * names).
 *
 * @throws the DNS error (`ENOTFOUND`, `ETIMEOUT`, …) when neither family has an address
 */
export async function resolveWithTtl(hostname: string, via: TtlResolver = resolver): Promise<{ addresses: LookupAddress[]; ttlSeconds: number }> {
  if (isLocalName(hostname)) return { addresses: await systemLookup(hostname), ttlSeconds: 0 };
  const [v4, v6] = await Promise.allSettled([via.resolve4(hostname, { ttl: true }), via.resolve6(hostname, { ttl: true })]);
  const records = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  const found = [
    ...(v4.status === 'fulfilled' ? v4.value.map((r) => ({ address: r.address, family: 4 })) : []),
    ...(v6.status === 'fulfilled' ? v6.value.map((r) => ({ address: r.address, family: 6 })) : []),
  ];
  if (found.length > 0) return { addresses: found, ttlSeconds: Math.min(...records.map((r) => r.ttl)) };
  // Neither family: the A lookup's error says why (a name with only AAAA records answered above).
  if (v4.status === 'rejected') {
    const err = v4.reason as { code?: string };
    // ENODATA for A (the name exists) but AAAA failed otherwise: report that one.
    if (err.code === 'ENODATA' && v6.status === 'rejected') throw v6.reason;
    throw v4.reason;
  }
  throw Object.assign(new Error(`${hostname} has no A or AAAA records`), { code: 'ENOTFOUND' });
}

/**
 * Answers kept for their DNS TTL (at most `maxTtlMs`), and one lookup in flight per name shared
 * by every request that needs it: a backfill asks for the same few PDS hosts and the PLC
 * directory thousands of times a minute, and each lookup is two DNS queries. Failures are not
 * kept. Safe for the guard: the addresses a request is checked against and connects to are
 * still the same ones (pinned-fetch.ts), only asked for less often.
 */
export class AddressCache {
  readonly #resolve: (hostname: string) => Promise<{ addresses: LookupAddress[]; ttlSeconds: number }>;
  readonly #maxTtlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { addresses: LookupAddress[]; until: number }>();
  readonly #inFlight = new Map<string, Promise<LookupAddress[]>>();

  constructor(resolve: (hostname: string) => Promise<{ addresses: LookupAddress[]; ttlSeconds: number }>, opts: { maxTtlMs?: number; maxEntries?: number; now?: () => number } = {}) {
    this.#resolve = resolve;
    this.#maxTtlMs = opts.maxTtlMs ?? 300_000;
    this.#maxEntries = opts.maxEntries ?? 10_000;
    this.#now = opts.now ?? Date.now;
  }

  /** The kept answer for `hostname` while it is fresh, else undefined (no lookup is started). */
  peek(hostname: string): LookupAddress[] | undefined {
    const hit = this.#entries.get(hostname);
    if (hit === undefined) return undefined;
    if (hit.until > this.#now()) return hit.addresses;
    this.#entries.delete(hostname);
    return undefined;
  }

  lookup(hostname: string): Promise<LookupAddress[]> {
    const hit = this.peek(hostname);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = this.#inFlight.get(hostname);
    if (pending) return pending;
    const p = this.#resolve(hostname).then(
      ({ addresses, ttlSeconds }) => {
        this.#inFlight.delete(hostname);
        const ms = Math.min(ttlSeconds * 1000, this.#maxTtlMs);
        if (ms > 0) {
          if (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
          this.#entries.set(hostname, { addresses, until: this.#now() + ms });
        }
        return addresses;
      },
      (err: unknown) => {
        this.#inFlight.delete(hostname);
        throw err;
      },
    );
    this.#inFlight.set(hostname, p);
    return p;
  }
}

const defaultCache = new AddressCache((hostname) => resolveWithTtl(hostname));
const defaultLookup: LookupFn = (hostname) => defaultCache.lookup(hostname);

/**
 * Whether the guard can answer for `url` without waiting: an IP literal, or a name whose answer
 * the default resolver keeps (`lookup` not replaced). Then a request needs no signal to abandon the lookup.
 */
export function answersAtOnce(url: URL, lookup: LookupFn | undefined): boolean {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return isIP(host) !== 0 || (lookup === undefined && defaultCache.peek(host) !== undefined);
}

/**
 * Checks that `url` is http(s) and that its host (a literal IP, or every address its name
 * resolves to) is a public address, unless `allowPrivate`. Returns the parsed URL.
 *
 * @throws ForbiddenAddressError for another scheme or a refused address
 * @throws TransportError when the name does not resolve (code `ENOTFOUND`, …)
 */
export async function checkHostAllowed(url: string | URL, policy: AddressPolicy): Promise<URL> {
  if (policy.allowPrivate) return parseHttpUrl(url);
  return (await guardedAddresses(url, policy)).url;
}

/**
 * `checkHostAllowed`, returning also the addresses that were checked, for the connection to
 * use and no other (see pinned-fetch.ts). The name is resolved even when private addresses are
 * allowed, so that the connection never resolves it a second time.
 */
export async function guardedAddresses(url: string | URL, policy: AddressPolicy): Promise<{ url: URL; addresses: LookupAddress[] }> {
  const u = parseHttpUrl(url);
  // For messages only: made when one is.
  const shown = () => redactUrl(u);
  // URL keeps IPv6 literals in brackets.
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  let addresses: LookupAddress[];
  const literal = isIP(host);
  if (literal !== 0) {
    addresses = [{ address: host, family: literal }];
  } else {
    const kept = policy.lookup === undefined ? defaultCache.peek(host) : undefined;
    const found = kept ?? await withSignal((policy.lookup ?? defaultLookup)(host), policy.signal).catch((err: unknown) => {
      if (policy.signal?.aborted) throw policy.signal.reason;
      const code = (err as { code?: unknown }).code;
      throw new TransportError(typeof code === 'string' ? code : 'ENOTFOUND', shown(), `cannot resolve ${host}`, { cause: err });
    });
    addresses = found.map((a) => ({ address: a.address, family: a.family === 6 || isIP(a.address) === 6 ? 6 : 4 }));
    if (addresses.length === 0) throw new TransportError('ENOTFOUND', shown(), `${host} has no addresses`);
  }
  if (!policy.allowPrivate) {
    for (const { address } of addresses) {
      const range = forbiddenRangeOf(address);
      if (range !== undefined) throw new ForbiddenAddressError(shown(), range, address);
    }
  }
  return { url: u, addresses };
}

function parseHttpUrl(url: string | URL): URL {
  // A URL is already parsed: serializing it to parse it again cost every request two parses.
  const u = url instanceof URL ? url : URL.parse(url);
  if (u === null) throw new ForbiddenAddressError(redactUrl(String(url)), 'not a valid URL');
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ForbiddenAddressError(redactUrl(u), `scheme ${u.protocol} is not http or https`);
  return u;
}

function withSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
