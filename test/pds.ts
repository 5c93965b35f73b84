/**
 * A real reference PDS (`@atproto/pds`) and PLC directory (`@did-plc/server`, in memory) on
 * loopback, for tests and the demo, plus plain-fetch XRPC helpers to fill it with accounts and
 * content and to read it back.
 *
 * The PDS needs better-sqlite3, which aborts on Node 24, so it runs as a child process on
 * Node 22 with its own dependencies: `test/pds-server/ensure.sh` provisions both (cached under
 * $REPOWALK_CACHE_DIR, idempotent; the first run on an empty cache takes about 1.5 min) and
 * `test/pds-server/server.mjs` runs the servers.
 *
 *   const pds = await startPds({ dataDir });
 *   const alice = await createAccount(pds, 'alice');           // alice.test, a did:plc
 *   await createRecord(alice, 'app.bsky.feed.post', { text: 'hi', createdAt: now() });
 *   const car = await getRepoCar(pds, alice.did);
 *   await pds.stop();
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { deflateSync, crc32 } from 'node:zlib';

const ENSURE_SCRIPT = fileURLToPath(new URL('./pds-server/ensure.sh', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Provisioning and the child process
// ---------------------------------------------------------------------------------------------

export interface PdsRuntime {
  /** Node 22 binary. */
  node: string;
  /** server.mjs, next to its node_modules. */
  server: string;
  dir: string;
}

let runtime: Promise<PdsRuntime> | undefined;

/**
 * Provisions Node 22 and the PDS's dependencies (once per process; ensure.sh itself is
 * idempotent and locks against concurrent callers). Progress is written to stderr.
 */
export function ensurePdsRuntime(opts: { timeoutMs?: number } = {}): Promise<PdsRuntime> {
  runtime ??= runEnsure(opts.timeoutMs ?? 15 * 60_000).catch((err: unknown) => {
    runtime = undefined;
    throw err;
  });
  return runtime;
}

async function runEnsure(timeoutMs: number): Promise<PdsRuntime> {
  const child = spawn('bash', [ENSURE_SCRIPT], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv({}),
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    process.stderr.write(s);
  });
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  try {
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    if (code !== 0) {
      throw new Error(
        `test/pds-server/ensure.sh failed (${signal ?? `exit ${code}`}${signal === 'SIGTERM' ? `, timeout ${timeoutMs} ms` : ''}):\n${tail(err)}`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
  const line = out.trim().split('\n').pop() ?? '';
  const parsed = JSON.parse(line) as PdsRuntime;
  return parsed;
}

/** The environment for the Node 22 children: no NODE_OPTIONS (a Node 24 / vitest loader would
 *  break Node 22) and no PDS_* or LOG_* settings inherited by accident. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('PDS_') || k.startsWith('LOG_') || k.startsWith('VITEST')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function tail(s: string, max = 4000): string {
  return s.length > max ? `…${s.slice(-max)}` : s;
}

export interface StartPdsOptions {
  /** Where the PDS keeps its SQLite files, blobs, secrets and the PLC's operation log. An
   *  existing directory is reused: same accounts, DIDs, admin password (and ports if free). */
  dataDir: string;
  /** Fixed ports (default: the ones last used with this dataDir when free, else free ones). */
  pdsPort?: number;
  plcPort?: number;
  /** Admin password (default: $REPOWALK_PDS_ADMIN_PASSWORD, else the one kept in
   *  dataDir/secrets.json, else a random one). */
  adminPassword?: string;
  /** Extra environment for the PDS, e.g. { PDS_RATE_LIMITS_ENABLED: 'true' }. */
  env?: Record<string, string>;
  /** How long to wait for the ready line once provisioning is done (default 60 s). */
  readyTimeoutMs?: number;
  /** Copy the child's stderr to ours and turn on the servers' logs (default: REPOWALK_PDS_LOG=1). */
  log?: boolean;
}

export interface PdsServer {
  /** http://127.0.0.1:P — use this to talk to the PDS. */
  pdsUrl: string;
  /** http://127.0.0.1:Q — the PLC directory (GET /<did> returns the DID document). */
  plcUrl: string;
  /** http://localhost:P — what the DID documents name as the PDS endpoint. */
  publicUrl: string;
  adminPassword: string;
  dataDir: string;
  pid: number;
  /** What the child wrote on stderr so far (last 64 KiB). */
  stderr(): string;
  /** SIGTERM, wait for a clean exit (SIGKILL after 15 s). Idempotent. */
  stop(): Promise<void>;
}

interface ReadyLine {
  pds: string;
  plc: string;
  adminPassword: string;
  publicUrl: string;
  dataDir: string;
}

/** Starts the PDS and the PLC (provisioning them first if needed); resolves when both answer. */
export async function startPds(opts: StartPdsOptions): Promise<PdsServer> {
  const rt = await ensurePdsRuntime();
  const log = opts.log ?? process.env.REPOWALK_PDS_LOG === '1';
  const args = [rt.server, '--data-dir', opts.dataDir, '--watch-stdin'];
  if (opts.pdsPort !== undefined) args.push('--pds-port', String(opts.pdsPort));
  if (opts.plcPort !== undefined) args.push('--plc-port', String(opts.plcPort));
  const extra: Record<string, string> = { ...(opts.env ?? {}) };
  const adminPassword = opts.adminPassword ?? process.env.REPOWALK_PDS_ADMIN_PASSWORD;
  if (adminPassword) extra.PDS_ADMIN_PASSWORD = adminPassword;
  if (log) extra.LOG_ENABLED ??= 'true';
  const child = spawn(rt.node, args, { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv(extra) });

  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr = (stderr + s).slice(-65536);
    if (log) process.stderr.write(s);
  });
  // If this process dies, the child sees stdin close and shuts down (--watch-stdin).
  child.stdin!.on('error', () => {});
  const onExit = () => child.kill('SIGTERM');
  process.once('exit', onExit);

  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let ready: ReadyLine;
  try {
    ready = await waitForReady(child, exited, opts.readyTimeoutMs ?? 60_000, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    process.removeListener('exit', onExit);
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    pdsUrl: ready.pds,
    plcUrl: ready.plc,
    publicUrl: ready.publicUrl,
    adminPassword: ready.adminPassword,
    dataDir: ready.dataDir,
    pid: child.pid!,
    stderr: () => stderr,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(killer);
        }
        process.removeListener('exit', onExit);
      })();
      return stopping;
    },
  };
}

async function waitForReady(
  child: ChildProcess,
  exited: Promise<[number | null, string | null]>,
  timeoutMs: number,
  stderr: () => string,
): Promise<ReadyLine> {
  let buf = '';
  let onData: ((s: string) => void) | undefined;
  const line = new Promise<ReadyLine>((resolve, reject) => {
    onData = (s: string) => {
      buf += s;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const l = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!l.startsWith('{')) continue;
        try {
          const v = JSON.parse(l) as ReadyLine;
          if (typeof v.pds === 'string' && typeof v.plc === 'string') resolve(v);
        } catch (err) {
          reject(new Error(`pds-server printed a bad ready line: ${l} (${String(err)})`));
        }
      }
    };
    child.stdout!.setEncoding('utf8').on('data', onData);
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      line,
      exited.then(([code, signal]) => {
        throw new Error(`pds-server exited before it was ready (${signal ?? `exit ${code}`}):\n${tail(stderr())}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`pds-server not ready after ${timeoutMs} ms:\n${tail(stderr())}`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    // Keep draining stdout so the child never blocks on a full pipe.
    if (onData) child.stdout!.removeListener('data', onData);
    child.stdout!.resume();
  }
}

// ---------------------------------------------------------------------------------------------
// XRPC over plain fetch
// ---------------------------------------------------------------------------------------------

/** Anything with the PDS's URL: a PdsServer, or a bare URL string. */
export type PdsTarget = string | { pdsUrl: string };
/** The PDS's URL and admin password (a PdsServer has both). */
export interface PdsAdmin {
  pdsUrl: string;
  adminPassword: string;
}

function baseUrl(t: PdsTarget): string {
  return (typeof t === 'string' ? t : t.pdsUrl).replace(/\/+$/, '');
}

/** An XRPC error answer: HTTP status, the `error` name (e.g. RepoNotFound) and `message`. */
export class XrpcError extends Error {
  readonly status: number;
  readonly error: string;
  readonly nsid: string;
  readonly headers: Headers;
  constructor(nsid: string, status: number, error: string, message: string, headers: Headers) {
    super(`${nsid}: ${status} ${error}${message ? `: ${message}` : ''}`);
    this.name = 'XrpcError';
    this.nsid = nsid;
    this.status = status;
    this.error = error;
    this.headers = headers;
  }
}

type Params = Record<string, string | number | boolean | undefined>;

export interface XrpcCall {
  params?: Params;
  /** JSON body (object) or raw bytes. */
  body?: unknown;
  contentType?: string;
  /** Bearer token (an account's accessJwt). */
  token?: string;
  /** Admin password: Basic auth as `admin`. */
  adminPassword?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** One XRPC request; throws XrpcError unless the answer is 2xx. Returns the raw Response. */
export async function xrpcFetch(pds: PdsTarget, method: 'GET' | 'POST', nsid: string, call: XrpcCall = {}): Promise<Response> {
  const url = new URL(`${baseUrl(pds)}/xrpc/${nsid}`);
  for (const [k, v] of Object.entries(call.params ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { ...(call.headers ?? {}) };
  if (call.token) headers.authorization = `Bearer ${call.token}`;
  if (call.adminPassword) headers.authorization = `Basic ${Buffer.from(`admin:${call.adminPassword}`).toString('base64')}`;
  let body: Uint8Array<ArrayBuffer> | string | undefined;
  if (call.body instanceof Uint8Array) {
    body = new Uint8Array(call.body);
    headers['content-type'] = call.contentType ?? 'application/octet-stream';
  } else if (call.body !== undefined) {
    body = JSON.stringify(call.body);
    headers['content-type'] = call.contentType ?? 'application/json';
  }
  const res = await fetch(url, { method, headers, body, signal: call.signal ?? null });
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    let error = `HTTP${res.status}`;
    let message = text.slice(0, 500);
    try {
      const j = JSON.parse(text) as { error?: string; message?: string };
      if (j.error) error = j.error;
      message = j.message ?? '';
    } catch {
      // not JSON
    }
    throw new XrpcError(nsid, res.status, error, message, res.headers);
  }
  return res;
}

export async function xrpcQuery<T = unknown>(pds: PdsTarget, nsid: string, params: Params = {}, call: XrpcCall = {}): Promise<T> {
  const res = await xrpcFetch(pds, 'GET', nsid, { ...call, params });
  return (await res.json()) as T;
}

export async function xrpcProcedure<T = unknown>(pds: PdsTarget, nsid: string, body?: unknown, call: XrpcCall = {}): Promise<T> {
  const res = await xrpcFetch(pds, 'POST', nsid, { ...call, body });
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

export interface TestAccount {
  did: string;
  handle: string;
  email: string;
  password: string;
  accessJwt: string;
  refreshJwt: string;
  /** The PDS this account lives on (loopback URL). */
  pdsUrl: string;
}

/** Creates an account. A handle without a dot gets the PDS's `.test` domain. */
export async function createAccount(
  pds: PdsTarget,
  handle: string,
  opts: { password?: string; email?: string } = {},
): Promise<TestAccount> {
  const full = handle.includes('.') ? handle : `${handle}.test`;
  const password = opts.password ?? `pw-${full}`;
  const email = opts.email ?? `${full.replace(/[^a-z0-9]/gi, '-')}@example.com`;
  const out = await xrpcProcedure<{ did: string; handle: string; accessJwt: string; refreshJwt: string }>(
    pds,
    'com.atproto.server.createAccount',
    { handle: full, email, password },
  );
  return { did: out.did, handle: out.handle, email, password, accessJwt: out.accessJwt, refreshJwt: out.refreshJwt, pdsUrl: baseUrl(pds) };
}

/** Logs in again (fresh tokens), e.g. after a PDS restart on the same data directory. */
export async function createSession(pds: PdsTarget, identifier: string, password: string): Promise<TestAccount> {
  const out = await xrpcProcedure<{ did: string; handle: string; email?: string; accessJwt: string; refreshJwt: string }>(
    pds,
    'com.atproto.server.createSession',
    { identifier, password },
  );
  return { did: out.did, handle: out.handle, email: out.email ?? '', password, accessJwt: out.accessJwt, refreshJwt: out.refreshJwt, pdsUrl: baseUrl(pds) };
}

/** com.atproto.server.deactivateAccount: getRepo then answers RepoDeactivated. */
export async function deactivateAccount(account: TestAccount): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.server.deactivateAccount', {}, { token: account.accessJwt });
}

export async function activateAccount(account: TestAccount): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.server.activateAccount', undefined, { token: account.accessJwt });
}

/** Admin takedown (com.atproto.admin.updateSubjectStatus): getRepo then answers RepoTakendown.
 *  `applied: false` reverses it. */
export async function takedownAccount(pds: PdsAdmin, did: string, opts: { applied?: boolean; ref?: string } = {}): Promise<void> {
  const applied = opts.applied ?? true;
  await xrpcProcedure(
    pds,
    'com.atproto.admin.updateSubjectStatus',
    {
      subject: { $type: 'com.atproto.admin.defs#repoRef', did },
      takedown: applied ? { applied, ref: opts.ref ?? `repowalk-test-${Date.now()}` } : { applied },
    },
    { adminPassword: pds.adminPassword },
  );
}

/** Admin delete (com.atproto.admin.deleteAccount): getRepo then answers RepoNotFound; the DID
 *  still resolves in the PLC. */
export async function deleteAccountAdmin(pds: PdsAdmin, did: string): Promise<void> {
  await xrpcProcedure(pds, 'com.atproto.admin.deleteAccount', { did }, { adminPassword: pds.adminPassword });
}

// ---------------------------------------------------------------------------------------------
// Records and blobs
// ---------------------------------------------------------------------------------------------

export interface RecordRef {
  uri: string;
  cid: string;
}

export interface WrittenRecord extends RecordRef {
  collection: string;
  rkey: string;
}

export type RecordValue = Record<string, unknown>;

function withType(collection: string, record: RecordValue): RecordValue {
  return record.$type ? record : { $type: collection, ...record };
}

function rkeyOf(uri: string): string {
  return uri.slice(uri.lastIndexOf('/') + 1);
}

export async function createRecord(
  account: TestAccount,
  collection: string,
  record: RecordValue,
  opts: { rkey?: string; validate?: boolean } = {},
): Promise<WrittenRecord> {
  const out = await xrpcProcedure<RecordRef>(
    account.pdsUrl,
    'com.atproto.repo.createRecord',
    { repo: account.did, collection, rkey: opts.rkey, validate: opts.validate, record: withType(collection, record) },
    { token: account.accessJwt },
  );
  return { uri: out.uri, cid: out.cid, collection, rkey: rkeyOf(out.uri) };
}

/** Creates or replaces the record at collection/rkey. */
export async function putRecord(
  account: TestAccount,
  collection: string,
  rkey: string,
  record: RecordValue,
  opts: { validate?: boolean } = {},
): Promise<WrittenRecord> {
  const out = await xrpcProcedure<RecordRef>(
    account.pdsUrl,
    'com.atproto.repo.putRecord',
    { repo: account.did, collection, rkey, validate: opts.validate, record: withType(collection, record) },
    { token: account.accessJwt },
  );
  return { uri: out.uri, cid: out.cid, collection, rkey };
}

export async function deleteRecord(account: TestAccount, collection: string, rkey: string): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.repo.deleteRecord', { repo: account.did, collection, rkey }, { token: account.accessJwt });
}

export type Write =
  | { action: 'create'; collection: string; rkey?: string; value: RecordValue }
  | { action: 'update'; collection: string; rkey: string; value: RecordValue }
  | { action: 'delete'; collection: string; rkey: string };

/** com.atproto.repo.applyWrites: up to 200 writes in one commit. Returns one entry per write
 *  (uri and cid for creates and updates, uri only for deletes). */
export async function applyWrites(
  account: TestAccount,
  writes: Write[],
  opts: { validate?: boolean } = {},
): Promise<Array<{ uri: string; cid?: string; collection: string; rkey: string }>> {
  const body = {
    repo: account.did,
    validate: opts.validate,
    writes: writes.map((w) =>
      w.action === 'delete'
        ? { $type: 'com.atproto.repo.applyWrites#delete', collection: w.collection, rkey: w.rkey }
        : {
            $type: `com.atproto.repo.applyWrites#${w.action}`,
            collection: w.collection,
            rkey: w.rkey,
            value: withType(w.collection, w.value),
          },
    ),
  };
  const out = await xrpcProcedure<{ results?: Array<{ uri?: string; cid?: string }> }>(account.pdsUrl, 'com.atproto.repo.applyWrites', body, {
    token: account.accessJwt,
  });
  const results = out.results ?? [];
  return writes.map((w, i) => {
    const r = results[i] ?? {};
    const rkey = r.uri ? rkeyOf(r.uri) : (w.rkey ?? '');
    return { uri: r.uri ?? `at://${account.did}/${w.collection}/${rkey}`, cid: r.cid, collection: w.collection, rkey };
  });
}

/** A blob reference as it appears in a record (JSON form). */
export interface BlobRef {
  $type: 'blob';
  ref: { $link: string };
  mimeType: string;
  size: number;
}

/** Uploads a blob; reference the returned BlobRef from a record soon, or the PDS drops it. */
export async function uploadBlob(account: TestAccount, bytes: Uint8Array, mimeType: string): Promise<BlobRef> {
  const out = await xrpcProcedure<{ blob: BlobRef }>(account.pdsUrl, 'com.atproto.repo.uploadBlob', bytes, {
    token: account.accessJwt,
    contentType: mimeType,
  });
  return out.blob;
}

/** com.atproto.sync.getBlob */
export async function getBlob(pds: PdsTarget, did: string, cid: string): Promise<Uint8Array> {
  const res = await xrpcFetch(pds, 'GET', 'com.atproto.sync.getBlob', { params: { did, cid } });
  return new Uint8Array(await res.arrayBuffer());
}

export interface ListedRecord {
  uri: string;
  cid: string;
  value: RecordValue;
}

/** Every record of one collection (com.atproto.repo.listRecords, all pages). */
export async function listRecords(pds: PdsTarget, did: string, collection: string, opts: { pageSize?: number } = {}): Promise<ListedRecord[]> {
  const all: ListedRecord[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await xrpcQuery<{ records: ListedRecord[]; cursor?: string }>(pds, 'com.atproto.repo.listRecords', {
      repo: did,
      collection,
      limit: opts.pageSize ?? 100,
      cursor,
    });
    all.push(...page.records);
    if (!page.cursor || page.records.length === 0) return all;
    cursor = page.cursor;
  }
}

/** Every record of a repo, all collections (describeRepo, then listRecords per collection). */
export async function listAllRecords(pds: PdsTarget, did: string): Promise<Array<ListedRecord & { collection: string; rkey: string }>> {
  const desc = await xrpcQuery<{ collections: string[] }>(pds, 'com.atproto.repo.describeRepo', { repo: did });
  const out: Array<ListedRecord & { collection: string; rkey: string }> = [];
  for (const collection of desc.collections) {
    for (const r of await listRecords(pds, did, collection)) out.push({ ...r, collection, rkey: rkeyOf(r.uri) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sync
// ---------------------------------------------------------------------------------------------

/** com.atproto.sync.getRepo as bytes (uncompressed transfer). Throws XrpcError, e.g. with
 *  error RepoDeactivated / RepoTakendown / RepoNotFound. */
export async function getRepoCar(pds: PdsTarget, did: string, opts: { since?: string; gzip?: boolean } = {}): Promise<Uint8Array> {
  const res = await xrpcFetch(pds, 'GET', 'com.atproto.sync.getRepo', {
    params: { did, since: opts.since },
    headers: { 'accept-encoding': opts.gzip ? 'gzip' : 'identity' },
  });
  return new Uint8Array(await res.arrayBuffer());
}

export interface RepoStatus {
  did: string;
  active: boolean;
  status?: string;
  rev?: string;
}

/** com.atproto.sync.getRepoStatus (deactivated / taken-down accounts answer active:false with a
 *  status; a deleted one throws RepoNotFound). */
export function getRepoStatus(pds: PdsTarget, did: string): Promise<RepoStatus> {
  return xrpcQuery<RepoStatus>(pds, 'com.atproto.sync.getRepoStatus', { did });
}

export interface ListedRepo {
  did: string;
  head: string;
  rev: string;
  active?: boolean;
  status?: string;
}

/** One page of com.atproto.sync.listRepos. */
export function listReposPage(pds: PdsTarget, opts: { limit?: number; cursor?: string } = {}): Promise<{ repos: ListedRepo[]; cursor?: string }> {
  return xrpcQuery(pds, 'com.atproto.sync.listRepos', { limit: opts.limit, cursor: opts.cursor });
}

/** Every repo the PDS lists, following the cursor until a page comes back empty. */
export async function listAllRepos(pds: PdsTarget, opts: { pageSize?: number } = {}): Promise<{ repos: ListedRepo[]; pages: number }> {
  const repos: ListedRepo[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await listReposPage(pds, { limit: opts.pageSize ?? 500, cursor });
    pages++;
    repos.push(...page.repos);
    if (!page.cursor || page.repos.length === 0) return { repos, pages };
    cursor = page.cursor;
  }
}

/** The DID document from the PLC directory. */
export async function resolvePlc(plcUrl: string, did: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${plcUrl.replace(/\/+$/, '')}/${encodeURIComponent(did)}`);
  if (!res.ok) throw new Error(`PLC ${did}: ${res.status} ${await res.text()}`);
  return (await res.json()) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Sample content
// ---------------------------------------------------------------------------------------------

/** A valid RGB PNG of one colour, with a few pixels varied by `seed` so each image (and its
 *  CID) is distinct. */
export function pngBytes(width = 8, height = 8, seed = 0): Uint8Array {
  const chunk = (type: string, data: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const p = row + 1 + x * 3;
      raw[p] = (seed * 67 + x * 16) & 0xff;
      raw[p + 1] = (seed * 131 + y * 16) & 0xff;
      raw[p + 2] = (seed * 29 + 128) & 0xff;
    }
  }
  return new Uint8Array(
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', deflateSync(raw)),
      chunk('IEND', Buffer.alloc(0)),
    ]),
  );
}

export interface SeedOptions {
  /** Records in the big account (default 5000; 0 skips it). */
  bigAccountRecords?: number;
  /** Prefix for handles, so a PDS can be seeded more than once (default ''). */
  prefix?: string;
  /** Writes per applyWrites call for the big account (max 200). */
  batchSize?: number;
}

export interface SampleAccounts {
  /** alice, bob, carol: profiles with avatars, posts (some with images, a reply), likes,
   *  follows and a repost; `big`: a profile and `bigAccountRecords` posts. */
  alice: TestAccount;
  bob: TestAccount;
  carol: TestAccount;
  big: TestAccount | undefined;
  all: TestAccount[];
  /** Every blob referenced by a record: owner DID and CID. */
  blobs: Array<{ did: string; cid: string; size: number }>;
  /** Records written per DID. */
  recordCounts: Record<string, number>;
  timings: { totalMs: number; bigAccountMs: number; bigAccountRecords: number };
}

/** Creates a few accounts with realistic app.bsky content and one big account. */
export async function seedSampleAccounts(pds: PdsTarget, opts: SeedOptions = {}): Promise<SampleAccounts> {
  const started = performance.now();
  const prefix = opts.prefix ?? '';
  const bigCount = opts.bigAccountRecords ?? 5000;
  const batchSize = Math.min(opts.batchSize ?? 200, 200);
  const names = ['alice', 'bob', 'carol'] as const;
  const blobs: SampleAccounts['blobs'] = [];
  const recordCounts: Record<string, number> = {};
  const count = (did: string, n = 1) => (recordCounts[did] = (recordCounts[did] ?? 0) + n);
  let t = Date.parse('2024-01-01T00:00:00Z');
  const at = () => new Date((t += 61_000)).toISOString();
  let seed = 1;

  const people: TestAccount[] = [];
  for (const name of names) people.push(await createAccount(pds, `${prefix}${name}`));
  const posts = new Map<string, WrittenRecord[]>();

  for (const [i, acct] of people.entries()) {
    const avatarBytes = pngBytes(16, 16, seed++);
    const avatar = await uploadBlob(acct, avatarBytes, 'image/png');
    blobs.push({ did: acct.did, cid: avatar.ref.$link, size: avatar.size });
    await putRecord(acct, 'app.bsky.actor.profile', 'self', {
      displayName: names[i]!.replace(/^./, (c) => c.toUpperCase()),
      description: `Sample account ${names[i]} for repowalk tests.`,
      avatar,
    });
    count(acct.did);
    const mine: WrittenRecord[] = [];
    for (let p = 0; p < 5; p++) {
      const record: RecordValue = { text: `${names[i]} post ${p}: hello from the test PDS`, createdAt: at(), langs: ['en'] };
      if (p % 2 === 1) {
        const image = await uploadBlob(acct, pngBytes(24, 16, seed++), 'image/png');
        blobs.push({ did: acct.did, cid: image.ref.$link, size: image.size });
        record.embed = {
          $type: 'app.bsky.embed.images',
          images: [{ image, alt: `image ${p} of ${names[i]}`, aspectRatio: { width: 24, height: 16 } }],
        };
      }
      mine.push(await createRecord(acct, 'app.bsky.feed.post', record));
      count(acct.did);
    }
    posts.set(acct.did, mine);
  }

  for (const [i, acct] of people.entries()) {
    const others = people.filter((o) => o !== acct);
    for (const other of others) {
      await createRecord(acct, 'app.bsky.graph.follow', { subject: other.did, createdAt: at() });
      count(acct.did);
      for (const post of (posts.get(other.did) ?? []).slice(0, 3)) {
        await createRecord(acct, 'app.bsky.feed.like', { subject: { uri: post.uri, cid: post.cid }, createdAt: at() });
        count(acct.did);
      }
    }
    const target = posts.get(others[0]!.did)![0]!;
    await createRecord(acct, 'app.bsky.feed.repost', { subject: { uri: target.uri, cid: target.cid }, createdAt: at() });
    await createRecord(acct, 'app.bsky.feed.post', {
      text: `${names[i]} replies`,
      createdAt: at(),
      reply: { root: { uri: target.uri, cid: target.cid }, parent: { uri: target.uri, cid: target.cid } },
    });
    count(acct.did, 2);
  }

  let big: TestAccount | undefined;
  let bigAccountMs = 0;
  if (bigCount > 0) {
    const bigStarted = performance.now();
    big = await createAccount(pds, `${prefix}big`);
    await putRecord(big, 'app.bsky.actor.profile', 'self', { displayName: 'Big', description: `${bigCount} posts` });
    count(big.did);
    for (let done = 0; done < bigCount; ) {
      const n = Math.min(batchSize, bigCount - done);
      const writes: Write[] = [];
      for (let k = 0; k < n; k++) {
        writes.push({
          action: 'create',
          collection: 'app.bsky.feed.post',
          value: { $type: 'app.bsky.feed.post', text: `post number ${done + k} of the big account`, createdAt: at() },
        });
      }
      await applyWrites(big, writes);
      done += n;
      count(big.did, n);
    }
    bigAccountMs = performance.now() - bigStarted;
  }

  return {
    alice: people[0]!,
    bob: people[1]!,
    carol: people[2]!,
    big,
    all: big ? [...people, big] : people,
    blobs,
    recordCounts,
    timings: { totalMs: performance.now() - started, bigAccountMs, bigAccountRecords: bigCount },
  };
}
