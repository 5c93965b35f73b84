import { describe, expect, it } from 'vitest';
import { type Commit, readCommit } from '../../../atproto/commit.ts';
import { frameJobs, readJobs } from './signature-frames.ts';
import { verifyCommitSignatureOffThread } from './signatures.ts';
import { makeRepo } from '../../../atproto/testing/make-repo.ts';
import { verifyRepo } from '../../../atproto/verify.ts';

describe('signature job frames', () => {
  it('carry what a signature check reads, and only those bytes of the views they were given', () => {
    // A commit decoded from a block of a 1 MB pack: its sig is a view of the pack.
    const pack = new Uint8Array(1 << 20).map((_, i) => i & 0xff);
    const commit: Commit = { did: 'did:plc:x', version: 3, data: 'bafy', rev: '3k', prev: null, sig: pack.subarray(1000, 1064), unsigned: new Uint8Array([1, 2, 3]) };
    const other: Commit = { ...commit, did: 'did:web:é.example', sig: new Uint8Array(0), unsigned: pack.subarray(5, 9) };
    const frame = frameJobs([
      { id: 7, commit, cid: 'bafycommit', key: 'did:key:zQ3sh' },
      { id: 4_000_000_000, commit: other, cid: 'bafyother', key: 'not a key ✗' },
    ]);
    expect(frame.byteLength).toBeLessThan(300);
    const jobs = readJobs(frame);
    expect(jobs.map((j) => [j.id, j.cid, j.key, j.commit.did])).toEqual([
      [7, 'bafycommit', 'did:key:zQ3sh', 'did:plc:x'],
      [4_000_000_000, 'bafyother', 'not a key ✗', 'did:web:é.example'],
    ]);
    expect([...jobs[0]!.commit.sig]).toEqual([...commit.sig]);
    expect([...jobs[0]!.commit.unsigned]).toEqual([1, 2, 3]);
    expect(jobs[1]!.commit.sig.length).toBe(0);
    expect([...jobs[1]!.commit.unsigned]).toEqual([5, 6, 7, 8]);
  });

  it('refuse a frame cut short', () => {
    const commit: Commit = { did: 'did:plc:x', version: 3, data: 'bafy', rev: '3k', prev: null, sig: new Uint8Array(64), unsigned: new Uint8Array(100) };
    const frame = frameJobs([{ id: 1, commit, cid: 'bafy', key: 'k' }]);
    expect(() => readJobs(frame.slice(0, frame.byteLength - 10))).toThrow(RangeError);
  });
});

describe('verifyCommitSignatureOffThread', () => {
  it('resolves for a good signature and rejects a bad one or another key, in one batch', async () => {
    const made = await makeRepo({ did: 'did:plc:sigframes', records: 1 });
    const other = await makeRepo({ did: 'did:plc:sigframes2', records: 1 });
    const repo = await verifyRepo(made.car, { did: made.did, signingKey: made.signingKey });
    const cid = made.commitCid;
    const commit = readCommit(repo.blocks, cid, made.did);
    const bad = { ...commit, sig: commit.sig.map((b, i) => (i === 10 ? b ^ 1 : b)) };
    const results = await Promise.allSettled([
      verifyCommitSignatureOffThread(commit, cid, made.signingKey),
      verifyCommitSignatureOffThread(bad, cid, made.signingKey),
      verifyCommitSignatureOffThread(commit, cid, other.signingKey),
      verifyCommitSignatureOffThread(commit, cid, 'not a key'),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/signature does not verify/);
    expect(String((results[3] as PromiseRejectedResult).reason)).toMatch(/not a key/);
  });
});
