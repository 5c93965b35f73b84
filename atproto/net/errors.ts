/**
 * Why a network step of backfill failed. Every class carries the `kind` of resync outcome it
 * leads to, so callers branch on type (or on `kind`), never on message text; messages name the
 * cause (host, URL, status, limit) for the repo's recorded error state and never carry
 * credentials (URLs pass through `redactUrl`).
 *
 * Outcome kinds, as the backfill issue defines them:
 * - `rate-limited`: HTTP 429; resync no sooner than `retryAfterMs`.
 * - `transport`: the connection failed (refused, reset, DNS, timeout, body cut short).
 * - `gone`: the PDS says the repo is deactivated, taken down or suspended.
 * - `not-found`: the PDS says `RepoNotFound`; the stored repo is deleted.
 * - `error`: anything else (bad DID document, forbidden address, cap passed, other XRPC error).
 */

export type OutcomeKind = 'rate-limited' | 'transport' | 'error' | 'gone' | 'not-found';

export type GoneStatus = 'deactivated' | 'takendown' | 'suspended';

/** Base of every error this package throws on purpose; anything else is a bug or a cancellation. */
export class NetError extends Error {
  override name = 'NetError';
  readonly kind: OutcomeKind;
  constructor(kind: OutcomeKind, message: string, options?: ErrorOptions) {
    // Messages quote remote input (URLs, XRPC messages, document fields) and are recorded
    // against the repo: a hostile server must not choose their size.
    super(boundText(message), options);
    this.kind = kind;
  }
}

/** HTTP 429. `retryAfterMs` comes from `Retry-After` or `RateLimit-Reset`, when either was usable. */
export class RateLimitedError extends NetError {
  override name = 'RateLimitedError';
  readonly host: string;
  readonly retryAfterMs: number | undefined;
  constructor(host: string, retryAfterMs: number | undefined, what = 'request') {
    const when = retryAfterMs === undefined ? 'no usable Retry-After or RateLimit-Reset' : `retry after ${formatMs(retryAfterMs)}`;
    super('rate-limited', `${what}: rate limited by ${host} (${when})`);
    this.host = host;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The connection failed: refused, reset, DNS failure, timeout, or the body ended before it was
 * complete. `code` is the underlying code (`ECONNREFUSED`, `ENOTFOUND`, `UND_ERR_SOCKET`,
 * `ETIMEDOUT`, `Z_BUF_ERROR`, …) so a log can tell them apart.
 */
export class TransportError extends NetError {
  override name = 'TransportError';
  readonly code: string;
  readonly url: string;
  constructor(code: string, url: string, detail: string, options?: ErrorOptions) {
    super('transport', `${url}: ${detail} (${code})`, options);
    this.code = code;
    this.url = url;
  }
}

/**
 * The read did not finish within its total deadline (plus the allowance its minimum rate gives
 * a large body): a server that answers, but too slowly to be worth waiting for, such as one that
 * drips a byte at a time. A transport failure for resync, with its own class and code
 * (`EDEADLINE`) so the recorded reason says "too slow", not "reset".
 */
export class DeadlineError extends TransportError {
  override name = 'DeadlineError';
  constructor(url: string, detail: string, options?: ErrorOptions) {
    super('EDEADLINE', url, detail, options);
  }
}

/** An XRPC error response other than the ones with their own class below (5xx included). */
export class XrpcError extends NetError {
  override name = 'XrpcError';
  /** HTTP status of the response. */
  readonly httpStatus: number;
  /** The XRPC error name (`InvalidRequest`, …), or `HTTP <status>` when the body had none. */
  readonly error: string;
  /** The XRPC error message, if the body had one (truncated). */
  readonly detail: string | undefined;
  constructor(what: string, httpStatus: number, error: string, detail: string | undefined, kind: OutcomeKind = 'error') {
    super(kind, `${what}: HTTP ${httpStatus} ${error}${detail ? `: ${detail}` : ''}`);
    this.httpStatus = httpStatus;
    this.error = error;
    this.detail = detail;
  }
}

/** `RepoDeactivated`, `RepoTakendown` or `RepoSuspended`: the repo exists but is not served. */
export class RepoGoneError extends XrpcError {
  override name = 'RepoGoneError';
  readonly status: GoneStatus;
  constructor(what: string, httpStatus: number, error: string, detail: string | undefined, status: GoneStatus) {
    super(what, httpStatus, error, detail, 'gone');
    this.status = status;
  }
}

/** `RepoNotFound`: the PDS has no such repo (for example, the account was deleted). */
export class RepoNotFoundError extends XrpcError {
  override name = 'RepoNotFoundError';
  constructor(what: string, httpStatus: number, error: string, detail: string | undefined) {
    super(what, httpStatus, error, detail, 'not-found');
  }
}

export type IdentityProblem =
  /** not a did:plc or atproto did:web identifier */
  | 'invalid-did'
  /** the directory or host has no document for it (404) */
  | 'not-found'
  /** the PLC directory says the DID is tombstoned (410) */
  | 'tombstoned'
  /** the directory or host answered with another failing status */
  | 'unavailable'
  /** not JSON, or not shaped like a DID document */
  | 'bad-document'
  /** the document's `id` is another DID */
  | 'did-mismatch'
  /** no usable `#atproto_pds` service */
  | 'no-pds'
  /** no `#atproto` verification method with a key */
  | 'no-signing-key'
  /** the `#atproto` key is not a secp256k1 or P-256 key */
  | 'bad-signing-key';

/** The DID cannot be resolved to a PDS and signing key. The message says what is missing and where. */
export class IdentityError extends NetError {
  override name = 'IdentityError';
  readonly did: string;
  readonly problem: IdentityProblem;
  constructor(did: string, problem: IdentityProblem, message: string, options?: ErrorOptions) {
    super('error', `${did}: ${message}`, options);
    this.did = did;
    this.problem = problem;
  }
}

/** A URL's host is (or resolves to) an address configuration does not allow, or the scheme is not http(s). */
export class ForbiddenAddressError extends NetError {
  override name = 'ForbiddenAddressError';
  readonly url: string;
  /** The offending address, when the refusal was about an address. */
  readonly address: string | undefined;
  /** What the address is (`loopback`, `private`, …) or why the URL was refused. */
  readonly reason: string;
  constructor(url: string, reason: string, address?: string) {
    super(
      'error',
      address === undefined
        ? `refusing ${url}: ${reason}`
        : `refusing ${url}: its host is or resolves to ${address}, a ${reason} address, and configuration does not allow private addresses`,
    );
    this.url = url;
    this.address = address;
    this.reason = reason;
  }
}

/** A redirect's `Location` is not a URL (`http://[`, `http://%zz/`, a port past 65535, …). */
export class BadRedirectError extends NetError {
  override name = 'BadRedirectError';
  readonly url: string;
  readonly location: string;
  constructor(url: string, location: string) {
    const shown = location.length > 200 ? `${location.slice(0, 200)}…` : location;
    super('error', `${url}: redirect to ${JSON.stringify(shown)}, which is not a valid URL`);
    this.url = url;
    this.location = shown;
  }
}

/** The (decompressed) response body passed the byte cap; the request was aborted as soon as it did. */
export class ResponseTooLargeError extends NetError {
  override name = 'ResponseTooLargeError';
  readonly url: string;
  readonly limit: number;
  /** Bytes seen when the cap was passed (or the announced `Content-Length`). */
  readonly seen: number;
  constructor(url: string, limit: number, seen: number) {
    super('error', `${url}: response is larger than the cap of ${limit} bytes (${seen} bytes seen)`);
    this.url = url;
    this.limit = limit;
    this.seen = seen;
  }
}

/** What a failure means for resync, as plain JSON (it goes into workflow history). */
export type Outcome =
  | { kind: 'rate-limited'; message: string; host: string; retryAfterMs: number | undefined }
  | { kind: 'transport'; message: string; code: string }
  | { kind: 'gone'; message: string; status: GoneStatus }
  | { kind: 'not-found'; message: string }
  | { kind: 'error'; message: string; name: string };

/**
 * Classifies any thrown value. Errors of this package map by their `kind`; everything else
 * (verification errors, bugs) is `error` with its name. Callers should let cancellation
 * propagate before asking: this function does not know a cancelled activity from a failure.
 */
export function outcomeOf(err: unknown): Outcome {
  if (err instanceof RateLimitedError) return { kind: 'rate-limited', message: err.message, host: err.host, retryAfterMs: err.retryAfterMs };
  if (err instanceof TransportError) return { kind: 'transport', message: err.message, code: err.code };
  if (err instanceof RepoGoneError) return { kind: 'gone', message: err.message, status: err.status };
  if (err instanceof RepoNotFoundError) return { kind: 'not-found', message: err.message };
  if (err instanceof Error) return { kind: 'error', message: err.message, name: err.name };
  return { kind: 'error', message: String(err), name: typeof err };
}

/** Longest error message kept (see NetError). */
export const MAX_ERROR_TEXT = 1000;

/** `text` cut to `max` characters, marked as cut. */
export function boundText(text: string, max = MAX_ERROR_TEXT): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A URL as text without user name or password, for messages and logs. */
export function redactUrl(url: string | URL): string {
  // A URL without credentials is its own redaction: no copy to make (two for every request).
  if (url instanceof URL && url.username === '' && url.password === '') return url.href;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return '<invalid URL>';
  }
  if (u.username !== '' || u.password !== '') {
    u.username = '';
    u.password = '';
  }
  return u.href;
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
