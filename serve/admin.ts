/**
 * The admin endpoints, tap's shape: `POST /repos/add`, `/repos/remove` and `/repos/resync`,
 * each with a JSON body `{ "dids": [...] }`, answered 200 with an empty body. What they do is
 * injected (`AdminActions`): the CLI and the worker wire them to backfill workflows, so that
 * this module knows nothing of Temporal.
 *
 * They sit behind a token from configuration: `Authorization: Bearer <token>`, or tap's own
 * `Basic admin:<token>`, so that the `@atproto/tap` client's `addRepos` works with
 * `adminPassword` set to the token. Without a configured token they are off.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import { z } from 'zod';
import { XrpcError, invalidRequest } from './errors.ts';
import { did } from './params.ts';

export interface AdminActions {
  /** Start mirroring these repos (a backfill). */
  addRepos(dids: string[]): Promise<void>;
  /** Fetch these repos again now. */
  resyncRepos(dids: string[]): Promise<void>;
  /** Stop mirroring these repos and remove what is held for them. */
  removeRepos(dids: string[]): Promise<void>;
}

export const ADMIN_ROUTES = { '/repos/add': 'addRepos', '/repos/remove': 'removeRepos', '/repos/resync': 'resyncRepos' } as const;
export type AdminRoute = keyof typeof ADMIN_ROUTES;

export const MAX_DIDS = 10_000;
export const AdminBody = z.object({ dids: z.array(did).min(1, 'must list at least one DID').max(MAX_DIDS, `must list at most ${MAX_DIDS} DIDs`) }).strict();

/**
 * Checks the Authorization header against the token.
 *
 * @throws {XrpcError} 401 AuthRequired when it is missing or wrong; 403 when no token is set.
 */
export function checkAdminAuth(header: string | undefined, token: string | undefined): void {
  if (!token) throw new XrpcError(403, 'Forbidden', 'admin endpoints are off: no admin token is configured (REPOWALK_SERVE_ADMIN_TOKEN)');
  if (!header) throw new XrpcError(401, 'AuthRequired', 'admin endpoints need an Authorization header: Bearer <token>');
  let given: string | undefined;
  if (header.startsWith('Bearer ')) given = header.slice(7).trim();
  else if (header.startsWith('Basic ')) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon >= 0 && decoded.slice(0, colon) === 'admin') given = decoded.slice(colon + 1);
  }
  // Compared as digests: equal length, constant time, whatever the input.
  const digest = (s: string) => createHash('sha256').update(s).digest();
  if (given === undefined || !timingSafeEqual(digest(given), digest(token))) {
    throw new XrpcError(401, 'AuthRequired', 'the admin token is missing or wrong');
  }
}

/** Parses an admin request body (already size-capped), naming what is wrong. */
export function parseAdminBody(text: string): string[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalidRequest('Error: the body must be JSON: {"dids": ["did:…", …]}');
  }
  const r = AdminBody.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw invalidRequest(`Error: body.${i.path.join('.') || '(root)'} ${i.message}`);
  }
  return [...new Set(r.data.dids)];
}
