/**
 * Handle verification, both ways: a DID document's `alsoKnownAs` handle is only a claim, which
 * counts when the handle points back at the DID, through the DNS TXT record
 * `_atproto.<handle>` (`did=<did>`) or `https://<handle>/.well-known/atproto-did`. An
 * unverified handle is stored as `handle.invalid`, as PDSes and the AppView show it, so that
 * nobody reading the mirror takes a hostile document's claim for the account's name.
 */
import { Resolver } from 'node:dns/promises';
import { NetError } from './errors.ts';
import { type HttpOptions, httpGet } from './http.ts';

/** What an unverified handle is stored as. */
export const INVALID_HANDLE = 'handle.invalid';

export interface HandleCheckOptions extends HttpOptions {
  /** TXT lookup (tests). Default: the system's resolvers, 3 s, two tries. */
  resolveTxt?: (name: string) => Promise<string[][]>;
  /** Where the handle's well-known document is (tests point it at a loopback port). */
  wellKnownUrl?: (handle: string) => URL;
}

export type HandleCheck = { verified: true; via: 'dns' | 'https' } | { verified: false; reason: string };

const resolver = new Resolver({ timeout: 3000, tries: 2 });
const systemTxt = (name: string) => resolver.resolveTxt(name);

/**
 * Whether `handle` points back at `did`. DNS first: a `did=` record there is decisive (two
 * different ones fail it); without one, the HTTPS well-known document must hold exactly `did`.
 * Never throws for what DNS or the host did; rethrows the caller's abort.
 */
export async function checkHandle(handle: string, did: string, opts: HandleCheckOptions): Promise<HandleCheck> {
  let dnsNote = 'no _atproto TXT record';
  try {
    const records = await (opts.resolveTxt ?? systemTxt)(`_atproto.${handle}`);
    const claimed = new Set(records.map((chunks) => chunks.join('')).filter((t) => t.startsWith('did=')).map((t) => t.slice(4).trim()));
    if (claimed.size > 1) return { verified: false, reason: `_atproto.${handle} has ${claimed.size} different did= records` };
    if (claimed.size === 1) {
      const [named] = claimed;
      return named === did ? { verified: true, via: 'dns' } : { verified: false, reason: `_atproto.${handle} names another DID` };
    }
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    dnsNote = `DNS: ${(err as { code?: string }).code ?? 'lookup failed'}`;
  }
  const url = opts.wellKnownUrl?.(handle) ?? new URL(`https://${handle}/.well-known/atproto-did`);
  try {
    const res = await httpGet(url, { ...opts, maxBytes: 2048, headers: { accept: 'text/plain' } });
    if (res.status !== 200) {
      res.body.cancel();
      return { verified: false, reason: `${dnsNote}; ${res.url}: HTTP ${res.status}` };
    }
    const text = new TextDecoder('utf-8', { fatal: false }).decode(await res.body.bytes()).trim();
    return text === did ? { verified: true, via: 'https' } : { verified: false, reason: `${dnsNote}; ${res.url} names another DID` };
  } catch (err) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (err instanceof NetError) return { verified: false, reason: `${dnsNote}; ${err.message}` };
    throw err;
  }
}
