import { describe, expect, it } from 'vitest';
import { ForbiddenAddressError } from './errors.ts';
import { xrpcUrl } from './xrpc.ts';

/** What `xrpcUrl` gave when it set each parameter on a parsed URL: the encoding to keep. */
function setOneByOne(pds: string, nsid: string, params: Record<string, string | number | undefined>): string {
  const url = new URL(`/xrpc/${nsid}`, pds);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, String(v));
  return url.href;
}

describe('xrpcUrl', () => {
  it('encodes parameters as URLSearchParams does and drops undefined ones', () => {
    const cases: Array<[string, Record<string, string | number | undefined>]> = [
      ['https://pds.example.com', { did: 'did:plc:abcdefghijklmnopqrstuvwx', since: undefined }],
      ['http://127.0.0.1:2583/', { did: 'did:web:localhost%3A1234', since: '3jzfcijpj2z2a' }],
      ['https://pds.example.com/ignored/path?q=1', { cursor: 'a b+c&d=e/é~*', limit: 1000 }],
      ['https://pds.example.com', {}],
      ['https://pds.example.com', { only: undefined }],
    ];
    for (const [pds, params] of cases) expect(xrpcUrl(pds, 'com.atproto.sync.getRepo', params).href, JSON.stringify(params)).toBe(setOneByOne(pds, 'com.atproto.sync.getRepo', params));
    expect(xrpcUrl('https://pds.example.com', 'com.atproto.sync.listRepos', { limit: 5, cursor: undefined }).href).toBe('https://pds.example.com/xrpc/com.atproto.sync.listRepos?limit=5');
  });

  it('refuses a PDS that is not a URL', () => {
    expect(() => xrpcUrl('not a url', 'com.atproto.sync.getRepo', { did: 'did:plc:a' })).toThrow(ForbiddenAddressError);
  });
});
