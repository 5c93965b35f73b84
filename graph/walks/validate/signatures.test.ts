import { describe, expect, it } from 'vitest';
import type { Commit } from '../../../atproto/commit.ts';
import { compact } from './signatures.ts';

describe('compact', () => {
  it('gives the commit its bytes in buffers of their own, equal to the views it had', () => {
    // A commit decoded from a block of a 1 MB pack: its sig and data CID are views of the pack.
    const pack = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
    const commit: Commit = { did: 'did:plc:x', version: 3, data: 'bafy', rev: '3k', prev: null, sig: pack.subarray(1000, 1064), unsigned: new Uint8Array([1, 2, 3]), dataBytes: pack.subarray(2000, 2036) };
    const out = compact(commit);
    expect(out.sig.buffer.byteLength).toBe(64);
    expect(out.dataBytes!.buffer.byteLength).toBe(36);
    expect([...out.sig]).toEqual([...commit.sig]);
    expect([...out.dataBytes!]).toEqual([...commit.dataBytes!]);
    // Bytes already in a buffer of their own are not copied again.
    expect(out.unsigned).toBe(commit.unsigned);
    expect({ ...out, sig: null, dataBytes: null, unsigned: null }).toEqual({ ...commit, sig: null, dataBytes: null, unsigned: null });
  });
});
