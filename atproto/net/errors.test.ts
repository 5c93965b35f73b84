import { describe, expect, it } from 'vitest';
import {
  ForbiddenAddressError,
  IdentityError,
  RateLimitedError,
  RepoGoneError,
  RepoNotFoundError,
  ResponseTooLargeError,
  TransportError,
  XrpcError,
  outcomeOf,
  redactUrl,
} from './errors.ts';
import { retryDelayMs } from './http.ts';

describe('outcomeOf', () => {
  it('maps every error of the package to its resync outcome, as plain JSON', () => {
    const cases: Array<[unknown, Record<string, unknown>]> = [
      [new RateLimitedError('pds.example', 2000), { kind: 'rate-limited', host: 'pds.example', retryAfterMs: 2000 }],
      [new TransportError('ECONNRESET', 'https://pds.example/x', 'reset'), { kind: 'transport', code: 'ECONNRESET' }],
      [new RepoGoneError('getRepo', 400, 'RepoTakendown', undefined, 'takendown'), { kind: 'gone', status: 'takendown' }],
      [new RepoNotFoundError('getRepo', 400, 'RepoNotFound', undefined), { kind: 'not-found' }],
      [new XrpcError('getRepo', 500, 'InternalServerError', 'oops'), { kind: 'error', name: 'XrpcError' }],
      [new IdentityError('did:plc:x', 'no-pds', 'no pds'), { kind: 'error', name: 'IdentityError' }],
      [new ForbiddenAddressError('http://10.0.0.1/', 'private', '10.0.0.1'), { kind: 'error', name: 'ForbiddenAddressError' }],
      [new ResponseTooLargeError('https://pds.example/x', 10, 11), { kind: 'error', name: 'ResponseTooLargeError' }],
      [new TypeError('a bug'), { kind: 'error', name: 'TypeError', message: 'a bug' }],
      ['a string', { kind: 'error', message: 'a string' }],
    ];
    for (const [err, expected] of cases) {
      const o = outcomeOf(err);
      expect(o).toMatchObject(expected);
      expect(JSON.parse(JSON.stringify(o))).toEqual(o);
      if (err instanceof Error) expect(o.message).toBe(err.message);
    }
  });

  it('gives every error the kind that outcomeOf reports', () => {
    expect(new RepoGoneError('x', 400, 'RepoSuspended', undefined, 'suspended').kind).toBe('gone');
    expect(new RepoNotFoundError('x', 400, 'RepoNotFound', undefined).kind).toBe('not-found');
    expect(new RepoNotFoundError('x', 400, 'RepoNotFound', undefined)).toBeInstanceOf(XrpcError);
  });
});

describe('retryDelayMs', () => {
  const now = Date.parse('2025-01-01T00:00:00Z');
  const h = (o: Record<string, string>) => new Headers(o);

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(retryDelayMs(h({ 'retry-after': '2' }), now)).toBe(2000);
    expect(retryDelayMs(h({ 'retry-after': 'Wed, 01 Jan 2025 00:00:30 GMT' }), now)).toBe(30_000);
    expect(retryDelayMs(h({ 'retry-after': 'Tue, 31 Dec 2024 00:00:00 GMT' }), now)).toBe(0);
  });

  it('falls back to RateLimit-Reset: a Unix time as the PDS sends it, or a delay', () => {
    expect(retryDelayMs(h({ 'ratelimit-reset': String(now / 1000 + 45) }), now)).toBe(45_000);
    expect(retryDelayMs(h({ 'ratelimit-reset': '12' }), now)).toBe(12_000);
    expect(retryDelayMs(h({ 'retry-after': '1', 'ratelimit-reset': '99' }), now)).toBe(1000);
  });

  it('ignores what it cannot read', () => {
    expect(retryDelayMs(h({}), now)).toBeUndefined();
    expect(retryDelayMs(h({ 'retry-after': 'soon', 'ratelimit-reset': '-5' }), now)).toBeUndefined();
  });
});

describe('redactUrl', () => {
  it('drops user name and password and keeps the rest', () => {
    expect(redactUrl('https://u:secret@pds.example/xrpc/x?did=did:plc:a')).toBe('https://pds.example/xrpc/x?did=did:plc:a');
    expect(redactUrl('not a url with secret')).toBe('<invalid URL>');
    // A URL object: redacted the same, and left as it was.
    const u = new URL('https://u:secret@pds.example/xrpc/x?did=did:plc:a');
    expect(redactUrl(u)).toBe('https://pds.example/xrpc/x?did=did:plc:a');
    expect(u.password).toBe('secret');
    expect(redactUrl(new URL('http://127.0.0.1:2583/plc/did:plc:a'))).toBe('http://127.0.0.1:2583/plc/did:plc:a');
  });
});
