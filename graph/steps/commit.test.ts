import { describe, expect, it } from 'vitest';
import { readCommit } from '../../atproto/commit.ts';
import { cidFromString } from '../../atproto/cid.ts';
import { CommitError } from '../../atproto/errors.ts';
import { makeRepo } from '../../atproto/testing/make-repo.ts';
import { verifyRepo } from '../../atproto/verify.ts';
import { decodeCommit } from './commit.ts';

describe('decodeCommit', () => {
  it('reads a commit block as readCommit does, and refuses what it refuses', async () => {
    const made = await makeRepo({ did: 'did:plc:decodecommit', records: 2 });
    const repo = await verifyRepo(made.car, { did: made.did, signingKey: made.signingKey });
    const cid = made.commitCid;
    const cidBytes = cidFromString(cid)!;
    const bytes = repo.blocks.dataAt(repo.blocks.indexOf(cidBytes));
    const want = readCommit(repo.blocks, cid, made.did);
    expect(decodeCommit(cid, bytes, made.did, cidBytes)).toEqual(want);
    // Without the DID (a commit reached without its repo): the one it names.
    expect(decodeCommit(cid, bytes, undefined)).toEqual(want);
    expect(() => decodeCommit(cid, bytes, 'did:plc:someoneelse', cidBytes)).toThrow(CommitError);
    // The same bytes under a raw CID are refused.
    const raw = Uint8Array.from(cidBytes);
    raw[1] = 0x55;
    expect(() => decodeCommit(cid, bytes, made.did, raw)).toThrow(/not of codec dag-cbor/);
    expect(() => decodeCommit(cid, bytes.subarray(0, bytes.length - 3), made.did, cidBytes)).toThrow(CommitError);
  });
});
