/**
 * What the server reads from PostgreSQL: repo rows (with the status a PDS would answer for
 * them), the record index in pages, blobs, and the records a `since` covers.
 */
import type pg from 'pg';
import { XrpcError, repoNotFound } from './errors.ts';

export interface RepoRow {
  did: string;
  status: string;
  goneStatus: 'deactivated' | 'takendown' | 'suspended' | null;
  rev: string | null;
  head: Buffer | null;
  data: Buffer | null;
  handle: string | null;
  pds: string | null;
  signingKey: string | null;
}

/** A repo with a stored head, as the endpoints serve it. */
export interface ServableRepo extends RepoRow {
  rev: string;
  head: Buffer;
  data: Buffer;
}

const REPO_COLUMNS = 'did, status, gone_status, rev, head_cid, data_cid, handle, pds, signing_key';

function toRepo(r: Record<string, unknown>): RepoRow {
  return {
    did: r.did as string,
    status: r.status as string,
    goneStatus: r.gone_status as RepoRow['goneStatus'],
    rev: r.rev as string | null,
    head: r.head_cid as Buffer | null,
    data: r.data_cid as Buffer | null,
    handle: r.handle as string | null,
    pds: r.pds as string | null,
    signingKey: r.signing_key as string | null,
  };
}

/** The repo row of a DID, or of a handle (as `repo` parameters allow either). */
export async function findRepo(pool: pg.Pool, repo: string): Promise<RepoRow | null> {
  const { rows } = repo.startsWith('did:')
    ? await pool.query(`SELECT ${REPO_COLUMNS} FROM repos WHERE did = $1`, [repo])
    : // Through repos_handle_lower (migration 0011): one probe, however many repos the mirror holds.
      await pool.query(`SELECT ${REPO_COLUMNS} FROM repos WHERE lower(handle) = lower($1) AND handle IS NOT NULL ORDER BY (status = 'active') DESC LIMIT 1`, [repo]);
  return rows[0] ? toRepo(rows[0]) : null;
}

/** Whether the mirror holds a head for this repo it may serve (a PDS would answer for it). */
function hasHead(r: RepoRow): r is ServableRepo {
  return r.head !== null && r.data !== null && r.rev !== null && r.status !== 'deleted' && r.status !== 'dropped';
}

/**
 * The repo, when the mirror can answer for it as its PDS would; otherwise the error that PDS
 * answers: RepoNotFound for one never held or deleted, RepoDeactivated / RepoTakendown /
 * RepoSuspended for one gone.
 */
export async function servableRepo(pool: pg.Pool, repo: string): Promise<ServableRepo> {
  const row = await findRepo(pool, repo);
  if (!row || !hasHead(row)) throw repoNotFound(repo);
  if (row.status === 'gone') throw goneError(row);
  return row;
}

export function goneError(row: RepoRow): XrpcError {
  switch (row.goneStatus) {
    case 'takendown':
      return new XrpcError(400, 'RepoTakendown', `Repo has been takendown: ${row.did}`);
    case 'suspended':
      return new XrpcError(400, 'RepoSuspended', `Repo has been suspended: ${row.did}`);
    default:
      return new XrpcError(400, 'RepoDeactivated', `Repo has been deactivated: ${row.did}`);
  }
}

/** A repo's status as `getRepoStatus` and `listRepos` report it. */
export function repoStatus(row: RepoRow): { active: boolean; status?: string } {
  if (row.status === 'gone') return { active: false, status: row.goneStatus ?? 'deactivated' };
  return { active: true };
}

export async function listRepoPage(pool: pg.Pool, after: string | undefined, limit: number): Promise<RepoRow[]> {
  const { rows } = await pool.query(
    `SELECT ${REPO_COLUMNS} FROM repos
     WHERE did > $1 AND head_cid IS NOT NULL AND status NOT IN ('deleted', 'dropped')
     ORDER BY did LIMIT $2`,
    [after ?? '', limit],
  );
  return rows.map(toRepo);
}

export interface RecordRef {
  rkey: string;
  cid: Buffer;
}

/** A page of a collection's record index, by rkey: descending, or ascending when `reverse`. */
export async function recordPage(pool: pg.Pool, did: string, collection: string, opts: { cursor?: string; limit: number; reverse: boolean }): Promise<RecordRef[]> {
  const { rows } = await pool.query<{ rkey: string; cid: Buffer }>(
    opts.reverse
      ? `SELECT rkey, cid FROM records WHERE did = $1 AND collection = $2 AND rkey > $3 ORDER BY rkey ASC LIMIT $4`
      : `SELECT rkey, cid FROM records WHERE did = $1 AND collection = $2 AND ($3::text IS NULL OR rkey < $3) ORDER BY rkey DESC LIMIT $4`,
    [did, collection, opts.reverse ? (opts.cursor ?? '') : (opts.cursor ?? null), opts.limit],
  );
  return rows;
}

export async function recordCid(pool: pg.Pool, did: string, collection: string, rkey: string): Promise<Buffer | null> {
  const { rows } = await pool.query<{ cid: Buffer }>('SELECT cid FROM records WHERE did = $1 AND collection = $2 AND rkey = $3', [did, collection, rkey]);
  return rows[0]?.cid ?? null;
}

export async function collectionsOf(pool: pg.Pool, did: string): Promise<string[]> {
  const { rows } = await pool.query<{ collection: string }>(
    'SELECT collection FROM collection_counts WHERE did = $1 AND count > 0 ORDER BY collection',
    [did],
  );
  return rows.map((r) => r.collection);
}

/** CIDs (binary, as Map keys) of the records created or updated after `since` (a rev). */
export async function recordsSince(pool: pg.Pool, did: string, since: string): Promise<Buffer[]> {
  const { rows } = await pool.query<{ cid: Buffer }>(
    `SELECT DISTINCT cid FROM events WHERE did = $1 AND kind IN ('create', 'update') AND rev > $2 AND cid IS NOT NULL`,
    [did, since],
  );
  return rows.map((r) => r.cid);
}

export interface BlobRow {
  key: string;
  mime: string | null;
  size: number | null;
}

/**
 * A mirrored blob. Blobs are content-addressed and shared between repos (the row names the repo
 * it was fetched from, not every repo that references it), so the caller checks the repo.
 */
export async function findBlob(pool: pg.Pool, cid: string): Promise<BlobRow | null> {
  const { rows } = await pool.query<{ key: string; mime: string | null; size: string | null }>(
    `SELECT key, mime, size FROM blobs WHERE cid = $1 AND status = 'present'`,
    [cid],
  );
  const r = rows[0];
  return r ? { key: r.key, mime: r.mime, size: r.size === null ? null : Number(r.size) } : null;
}

/**
 * The DID document a repo's row implies: its handle, its atproto signing key and its PDS, as
 * the mirror last resolved them (describeRepo's `didDoc`, tap's `/resolve`).
 */
export function didDocument(repo: RepoRow): Record<string, unknown> {
  return {
    '@context': ['https://www.w3.org/ns/did/v1', 'https://w3id.org/security/multikey/v1', 'https://w3id.org/security/suites/secp256k1-2019/v1'],
    id: repo.did,
    alsoKnownAs: repo.handle ? [`at://${repo.handle}`] : [],
    verificationMethod: repo.signingKey
      ? [{ id: `${repo.did}#atproto`, type: 'Multikey', controller: repo.did, publicKeyMultibase: repo.signingKey.replace(/^did:key:/, '') }]
      : [],
    service: repo.pds ? [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: repo.pds }] : [],
  };
}
