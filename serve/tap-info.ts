/**
 * tap's two read endpoints beside its stream, as the `@atproto/tap` client calls them:
 *
 * - `GET /resolve/<did>`: the DID document (the client's `resolveDid`, which parses it with
 *   `@atproto/common`'s `didDocument` and gives null on a 404). The mirror answers from what it
 *   holds for the repo (handle, signing key, PDS, as it last resolved them), never by asking
 *   the network on a reader's behalf; a DID it does not hold is a 404.
 * - `GET /info/<did>`: the repo's state as tap's `repoInfoSchema` reads it: `did`, `handle`,
 *   `state`, `rev`, `records`, and `error` and `retries` (the client's `getRepoInfo`). `state`
 *   takes tap's names: pending, active, desynchronized (waiting to be fetched again after a
 *   failure), takendown, suspended, deactivated, error. A repo removed or deleted at its PDS is
 *   not held: 404, as tap answers for a repo it removed.
 *
 * Like the XRPC methods, these are open reads; errors are XRPC-shaped.
 */
import type pg from 'pg';
import { XrpcError, invalidRequest } from './errors.ts';
import { did as didParam } from './params.ts';
import { didDocument, findRepo, type RepoRow } from './repos.ts';

export const TAP_READ_ROUTES = ['/resolve', '/info'] as const;
export type TapReadRoute = (typeof TAP_READ_ROUTES)[number];

/** tap's repo states (`models.RepoState` in tap's source). */
export type TapRepoState = 'pending' | 'desynchronized' | 'resyncing' | 'active' | 'takendown' | 'suspended' | 'deactivated' | 'error';

export interface TapRepoInfo {
  did: string;
  handle: string;
  state: TapRepoState;
  rev: string;
  records: number;
  error?: string;
  retries: number;
}

/** The route (`/resolve` or `/info`) a path is under, or undefined. */
export function tapReadRoute(path: string): TapReadRoute | undefined {
  return TAP_READ_ROUTES.find((r) => path.startsWith(`${r}/`));
}

/**
 * Answers `GET <route>/<did>`.
 *
 * @throws {XrpcError} 400 InvalidRequest for a malformed DID; 404 NotFound for one not held.
 */
export async function tapRead(pool: pg.Pool, route: TapReadRoute, path: string): Promise<unknown> {
  const did = didFromPath(path.slice(route.length + 1));
  const row = await findHeldRepo(pool, did);
  if (route === '/resolve') return didDocument(row);
  const { rows } = await pool.query<{ records_count: string; resync_kind: string | null; resync_count: number; last_error: string | null }>(
    'SELECT records_count, resync_kind, resync_count, last_error FROM repos WHERE did = $1',
    [row.did],
  );
  const extra = rows[0]!;
  const info: TapRepoInfo = {
    did: row.did,
    handle: row.handle ?? '',
    state: tapState(row, extra.resync_kind),
    rev: row.rev ?? '',
    records: Number(extra.records_count),
    retries: extra.resync_count,
  };
  if (extra.last_error) info.error = extra.last_error;
  return info;
}

function didFromPath(segment: string): string {
  let text: string;
  try {
    text = decodeURIComponent(segment);
  } catch {
    throw invalidRequest('Error: the DID in the path is not valid percent-encoding');
  }
  const r = didParam.safeParse(text);
  if (!r.success) throw invalidRequest(`Error: ${JSON.stringify(text.slice(0, 100))} is not a valid DID`);
  return r.data;
}

async function findHeldRepo(pool: pg.Pool, did: string): Promise<RepoRow> {
  const row = await findRepo(pool, did);
  if (!row || row.status === 'deleted' || row.status === 'dropped') throw new XrpcError(404, 'NotFound', `repo not found: ${did}`);
  return row;
}

function tapState(row: RepoRow, resyncKind: string | null): TapRepoState {
  switch (row.status) {
    case 'pending':
      return 'pending';
    case 'gone':
      return row.goneStatus ?? 'deactivated';
    case 'error':
      return 'error';
    default:
      return resyncKind !== null ? 'desynchronized' : 'active';
  }
}
