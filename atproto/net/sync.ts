/**
 * The `com.atproto.sync.*` calls backfill makes against a PDS, with the guard, politeness,
 * timeouts and caps of `http.ts`, and failures classified into the errors of `errors.ts`:
 *
 * - 429 → RateLimitedError (the host cools down for `Retry-After` / `RateLimit-Reset`)
 * - `RepoDeactivated|RepoTakendown|RepoSuspended` → RepoGoneError; `RepoNotFound` → RepoNotFoundError
 * - other XRPC errors and 5xx → XrpcError; a malformed success body → XrpcError `InvalidResponse`
 * - refused, reset, DNS, timeout, body cut short → TransportError
 * - a PDS on a refused address → ForbiddenAddressError; past a byte cap → ResponseTooLargeError
 *
 * `pds` is the PDS origin (`https://pds.example.com`), as `resolveDid` returns it.
 */
import { z } from 'zod';
import type { ResponseBody } from './body.ts';
import { XrpcError } from './errors.ts';
import type { HttpOptions } from './http.ts';
import { readJson, xrpcGet } from './xrpc.ts';
import { didProblem, showDid } from './did.ts';

export type SyncOptions = HttpOptions;

/** Cap on JSON responses (status, listRepos pages). A 1,000-repo page is about 200 KB. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;

export interface GetRepoOptions extends SyncOptions {
  /** Cap on the decoded CAR. */
  maxBytes: number;
  /** Only blocks newer than this rev (a diff CAR). */
  since?: string;
  /** Called with each chunk's decoded size (heartbeats). */
  onBytes?: (n: number) => void;
}

/**
 * Starts `com.atproto.sync.getRepo` and resolves once the response is known to be a success;
 * the returned body streams the CAR (compressed transfer accepted; the cap counts decoded
 * bytes and aborts the request the moment it is passed). The caller must iterate the body to
 * its end or `cancel()` it: it holds the politeness slot and the connection.
 */
export async function openRepo(pds: string, did: string, opts: GetRepoOptions): Promise<ResponseBody> {
  const res = await xrpcGet(pds, 'com.atproto.sync.getRepo', { did, since: opts.since }, { ...opts, headers: { accept: 'application/vnd.ipld.car' } });
  return res.body;
}

/**
 * The CAR of `did` as a stream of chunks, ready to hand to a streaming reader. Lazy: the
 * request starts on the first `next()`, so every error of `openRepo` surfaces from the
 * iteration; stopping early (a reader that fails on a bad block) closes the connection.
 */
export async function* getRepo(pds: string, did: string, opts: GetRepoOptions): AsyncGenerator<Uint8Array, void, undefined> {
  yield* await openRepo(pds, did, opts);
}

/** The whole CAR of `did` in one buffer. */
export async function getRepoBytes(pds: string, did: string, opts: GetRepoOptions): Promise<Uint8Array> {
  return (await openRepo(pds, did, opts)).bytes();
}

export interface GetBlobOptions extends SyncOptions {
  /** Cap on the decoded blob. */
  maxBytes: number;
}

/**
 * `com.atproto.sync.getBlob`: the blob's bytes. Checking them against `cid` is the caller's job.
 * A missing blob is an XrpcError with `error` `BlobNotFound` (or RepoNotFoundError / RepoGoneError
 * for the repo).
 */
export async function getBlob(pds: string, did: string, cid: string, opts: GetBlobOptions): Promise<Uint8Array> {
  const res = await xrpcGet(pds, 'com.atproto.sync.getBlob', { did, cid }, opts);
  return res.body.bytes();
}

const repoStatusSchema = z.object({
  did: z.string(),
  active: z.boolean(),
  status: z.string().optional(),
  rev: z.string().optional(),
});
export type RepoStatus = z.infer<typeof repoStatusSchema>;

/**
 * `com.atproto.sync.getRepoStatus`: whether the repo is active, why not (`status`:
 * `deactivated`, `takendown`, `suspended`, …) and its current rev. An inactive repo is a
 * successful answer here, not a RepoGoneError; an unknown one is RepoNotFoundError.
 */
export async function getRepoStatus(pds: string, did: string, opts: SyncOptions): Promise<RepoStatus> {
  const nsid = 'com.atproto.sync.getRepoStatus';
  const res = await xrpcGet(pds, nsid, { did }, { ...opts, maxBytes: MAX_JSON_BYTES });
  return readJson(res, repoStatusSchema, `${nsid} on ${res.host}`);
}

const listedRepoSchema = z.object({
  did: z.string(),
  head: z.string(),
  rev: z.string(),
  active: z.boolean().optional(),
  status: z.string().optional(),
});
// Entries are checked one by one (below), so that one hostile entry costs only itself.
const listReposSchema = z.object({
  cursor: z.string().optional(),
  repos: z.array(z.unknown()),
});
export type ListedRepo = z.infer<typeof listedRepoSchema>;

/** An entry of a listing that was left out, and why (its DID shown bounded). */
export interface SkippedListing {
  index: number;
  reason: string;
}

export interface ListReposPage {
  cursor?: string | undefined;
  /** The entries that are well-formed and name a DID `didProblem` accepts. */
  repos: ListedRepo[];
  /** The entries that are not, in page order. */
  skipped: SkippedListing[];
}

export interface ListReposOptions extends SyncOptions {
  /** Where to start; absent for the first page. */
  cursor?: string;
  /** 1 to 1000; the PDS's default (500) when absent. */
  limit?: number;
}

/**
 * One page of `com.atproto.sync.listRepos`. Entries that are malformed or name a DID that
 * `didProblem` refuses are left out and reported in `skipped`: a listing is hostile input, and
 * one bad entry must not fail the backfill of every other repo on the PDS.
 */
export async function listRepos(pds: string, opts: ListReposOptions): Promise<ListReposPage> {
  const nsid = 'com.atproto.sync.listRepos';
  const res = await xrpcGet(pds, nsid, { cursor: opts.cursor, limit: opts.limit }, { ...opts, maxBytes: MAX_JSON_BYTES });
  const page = await readJson(res, listReposSchema, `${nsid} on ${res.host}`);
  const repos: ListedRepo[] = [];
  const skipped: SkippedListing[] = [];
  page.repos.forEach((entry, index) => {
    const parsed = listedRepoSchema.safeParse(entry);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      skipped.push({ index, reason: `${issue.path.join('.') || '(entry)'}: ${issue.message}` });
      return;
    }
    const problem = didProblem(parsed.data.did);
    if (problem !== undefined) skipped.push({ index, reason: `did ${showDid(parsed.data.did)}: ${problem}` });
    else repos.push(parsed.data);
  });
  return { cursor: page.cursor, repos, skipped };
}

/**
 * Every page of `listRepos`, from `opts.cursor` on. Stops after a page without a cursor, or
 * at an empty page (the reference PDS keeps returning a cursor until a page comes back empty;
 * the empty page is not yielded). Each page carries the cursor to resume after it.
 *
 * @throws XrpcError `InvalidResponse` when the cursor does not advance (a server that loops)
 */
export async function* listAllRepos(pds: string, opts: ListReposOptions): AsyncGenerator<ListReposPage, void, undefined> {
  let cursor = opts.cursor;
  for (;;) {
    const page = await listRepos(pds, { ...opts, cursor });
    if (page.repos.length === 0 && page.skipped.length === 0) return;
    yield page;
    if (page.cursor === undefined) return;
    if (page.cursor === cursor) throw new XrpcError(`com.atproto.sync.listRepos on ${new URL(pds).host}`, 200, 'InvalidResponse', `cursor ${JSON.stringify(cursor)} did not advance`);
    cursor = page.cursor;
  }
}
