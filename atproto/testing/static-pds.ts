/**
 * A static PDS and PLC on one loopback port, serving pre-made signed repos: `listRepos`,
 * `getRepo` and the PLC's `/<did>`. The reference PDS would spend minutes creating thousands of
 * accounts; this serves them at once, so benchmarks measure repowalk and multi-worker tests can
 * afford hundreds of repos. The repos themselves are real (made by @atproto/repo, signed).
 */
import { createServer, type Server } from 'node:http';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRepo, generateRecords, newKeypair } from './make-repo.ts';

export interface SmallRepo {
  did: string;
  car: string; // base64
  signingKey: string; // did:key
}

const CACHE_VERSION = 3;

/**
 * N repos of `records` records each, signed, cached on disk (they take a while to make). All
 * signed with one key, unless `keyPerRepo`: as on the network, where a backfill meets each
 * signing key once, so what a key costs to parse is paid per repo.
 */
export async function smallRepos(n: number, records: number, log: (l: string) => void, opts: { keyPerRepo?: boolean } = {}): Promise<SmallRepo[]> {
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(process.env.HOME ?? tmpdir(), '.cache', 'repowalk'), 'test-repos');
  const file = join(dir, `small-v${CACHE_VERSION}-${n}x${records}${opts.keyPerRepo ? '-keys' : ''}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  log(`e2e: making ${n} signed repos of ${records} records${opts.keyPerRepo ? ', a key each' : ''} (once; cached in ${file})`);
  const shared = opts.keyPerRepo ? undefined : await newKeypair();
  const out: SmallRepo[] = [];
  for (let i = 0; i < n; i++) {
    // did:plc identifiers are 24 characters of base32 (a-z, 2-7): the index, spelled in it.
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    let tail = '';
    for (let v = i; tail.length < 8; v = Math.floor(v / 32)) tail = alphabet[v % 32] + tail;
    const did = `did:plc:bench${'a'.repeat(11)}${tail}`;
    // Distinct record content per repo, as on the network: repos that shared every block would
    // measure lock contention on shared refcounts, not backfill.
    const recs = generateRecords(records).map((r) => ({ ...r, value: { ...r.value, bench: `${i}` } }));
    const made = await makeRepo({ did, records: recs, keypair: shared ?? (await newKeypair()) });
    out.push({ did, car: Buffer.from(made.car).toString('base64'), signingKey: made.signingKey });
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, JSON.stringify(out));
  return out;
}

export interface ServeReposOptions {
  /** Added before each getRepo answer, so that requests overlap (politeness and crash tests). */
  getRepoDelayMs?: number;
  /** The PDS endpoint the DID documents name (default this server): e.g. a fault server in front of it. */
  pdsEndpoint?: () => string;
}

/** listRepos, getRepo and PLC lookups (under `/plc`) for `repos`, all on one loopback port. */
export async function serveRepos(repos: SmallRepo[], opts: ServeReposOptions = {}): Promise<{ url: string; server: Server }> {
  const byDid = new Map(repos.map((r) => [r.did, { ...r, bytes: Buffer.from(r.car, 'base64') }]));
  const order = repos.map((r) => r.did);
  let base = '';
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', base);
    if (u.pathname === '/xrpc/com.atproto.sync.listRepos') {
      const from = Number(u.searchParams.get('cursor') ?? 0);
      const limit = Math.min(Number(u.searchParams.get('limit') ?? 500), 1000);
      const page = order.slice(from, from + limit);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ repos: page.map((did) => ({ did, head: 'bafy', rev: '3k', active: true })), ...(page.length ? { cursor: String(from + page.length) } : {}) }));
    } else if (u.pathname === '/xrpc/com.atproto.sync.getRepo') {
      const r = byDid.get(u.searchParams.get('did') ?? '');
      if (!r) {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: 'RepoNotFound', message: 'no such repo' }));
        return;
      }
      const send = () => {
        res.setHeader('content-type', 'application/vnd.ipld.car');
        res.end(r.bytes);
      };
      if (opts.getRepoDelayMs) setTimeout(send, opts.getRepoDelayMs);
      else send();
    } else if (u.pathname.startsWith('/plc/did:plc:')) {
      const did = decodeURIComponent(u.pathname.slice('/plc/'.length));
      const r = byDid.get(did);
      if (!r) {
        res.statusCode = 404;
        res.end('{}');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          '@context': ['https://www.w3.org/ns/did/v1'],
          id: did,
          alsoKnownAs: [`at://${did.slice(8, 16)}.bench.test`],
          verificationMethod: [{ id: `${did}#atproto`, type: 'Multikey', controller: did, publicKeyMultibase: r.signingKey.slice('did:key:'.length) }],
          service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: opts.pdsEndpoint?.() ?? base }],
        }),
      );
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return { url: base, server };
}
