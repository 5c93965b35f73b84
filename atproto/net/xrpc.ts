/**
 * XRPC GET plumbing shared by the sync calls: building the URL, and turning a failing response
 * into the error class it stands for.
 */
import { z } from 'zod';
import { ForbiddenAddressError, type GoneStatus, RepoGoneError, RepoNotFoundError, XrpcError, redactUrl } from './errors.ts';
import { type GetOptions, type HttpResponse, httpGet, rateLimited } from './http.ts';

/** One decoder for every body (one per call cost more than the small document it read). */
const UTF8 = new TextDecoder();

/** Error bodies are read up to this size; the rest is dropped. */
const MAX_ERROR_BODY = 16 * 1024;
/** XRPC messages are kept to this length in errors (they end up in the repo's recorded state). */
const MAX_DETAIL = 300;

const GONE: Record<string, GoneStatus> = {
  RepoDeactivated: 'deactivated',
  RepoTakendown: 'takendown',
  RepoSuspended: 'suspended',
};

const errorBody = z.object({ error: z.string().optional(), message: z.string().optional() });

/** `<pds>/xrpc/<nsid>?<params>`, dropping undefined params. */
export function xrpcUrl(pds: string, nsid: string, params: Record<string, string | number | undefined>): URL {
  // The query is encoded as `url.searchParams.set` would, but the URL is parsed once: setting
  // each parameter on a parsed URL re-serializes it every time.
  const query = new URLSearchParams();
  for (const k in params) {
    const v = params[k];
    if (v !== undefined) query.set(k, String(v));
  }
  const search = query.size > 0 ? `?${query}` : '';
  const url = URL.parse(`/xrpc/${nsid}${search}`, pds);
  if (url === null) throw new ForbiddenAddressError(redactUrl(pds), 'the PDS is not a valid URL');
  return url;
}

/**
 * GETs an XRPC method and returns the response if it is 2xx; otherwise throws the error it
 * stands for (see `xrpcFailure`).
 */
export async function xrpcGet(pds: string, nsid: string, params: Record<string, string | number | undefined>, opts: GetOptions): Promise<HttpResponse> {
  const res = await httpGet(xrpcUrl(pds, nsid, params), opts);
  if (res.status >= 200 && res.status < 300) return res;
  throw await xrpcFailure(res, opts, `${nsid} on ${res.host}`);
}

/**
 * The error a failing XRPC response stands for: 429 → RateLimitedError (and the host cools
 * down); `RepoDeactivated|RepoTakendown|RepoSuspended` → RepoGoneError; `RepoNotFound` →
 * RepoNotFoundError; anything else (5xx included) → XrpcError. Consumes the body.
 */
export async function xrpcFailure(res: HttpResponse, opts: GetOptions, what: string): Promise<Error> {
  if (res.status === 429) return rateLimited(res, opts.politeness, what);
  const raw = await res.body.readUpTo(MAX_ERROR_BODY);
  let error: string | undefined;
  let detail: string | undefined;
  try {
    const parsed = errorBody.safeParse(JSON.parse(UTF8.decode(raw)));
    if (parsed.success) ({ error, message: detail } = parsed.data);
  } catch {
    // Not JSON (a proxy's HTML error page, say): the status is all we know.
  }
  if (detail !== undefined && detail.length > MAX_DETAIL) detail = `${detail.slice(0, MAX_DETAIL)}…`;
  const name = error ?? `HTTP ${res.status}`;
  const gone = error === undefined ? undefined : GONE[error];
  if (gone) return new RepoGoneError(what, res.status, name, detail, gone);
  if (error === 'RepoNotFound') return new RepoNotFoundError(what, res.status, name, detail);
  return new XrpcError(what, res.status, name, detail);
}

/**
 * Reads a successful JSON response (capped by the request's `maxBytes`) and validates it.
 *
 * @throws XrpcError `InvalidResponse` when it is not JSON or not shaped as `schema` says
 */
export async function readJson<T>(res: HttpResponse, schema: z.ZodType<T>, what: string): Promise<T> {
  const bytes = await res.body.bytes();
  let json: unknown;
  try {
    json = JSON.parse(UTF8.decode(bytes));
  } catch {
    throw new XrpcError(what, res.status, 'InvalidResponse', 'response body is not JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new XrpcError(what, res.status, 'InvalidResponse', first.join('; '));
  }
  return parsed.data;
}
