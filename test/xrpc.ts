/**
 * XRPC over plain fetch, for tests: calls to the reference PDS (`stack/pds.ts`) or any other
 * server, and the read calls tests check the mirror against (getRepo, listRepos, listRecords,
 * getBlob, the PLC's DID documents).
 *
 *   const car = await getRepoCar(pds, alice.did);
 */

/** Anything with the PDS's URL: a PdsServer, or a bare URL string. */
export type PdsTarget = string | { pdsUrl: string };
/** The PDS's URL and admin password (a PdsServer has both). */
export interface PdsAdmin {
  pdsUrl: string;
  adminPassword: string;
}

export function baseUrl(t: PdsTarget): string {
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

/** A record's value as JSON. */
export type RecordValue = Record<string, unknown>;

/** The record key of an at:// URI. */
export function rkeyOf(uri: string): string {
  return uri.slice(uri.lastIndexOf('/') + 1);
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
