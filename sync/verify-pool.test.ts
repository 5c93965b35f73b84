/**
 * The verify threads give what the inline check gives: the same change for a good commit (its
 * blocks views into the caller's frame), the same named error for a bad signature or a bad
 * proof; and a closed pool refuses work instead of hanging.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secp256k1Keypair } from '@atproto/crypto';
import { generatedFirehose, readFirehose } from '../bench/sync-firehose.ts';
import { SignatureError } from '../atproto/errors.ts';
import { CommitVerifyError } from './errors.ts';
import { decodeFrame } from './frames.ts';
import { verifyCommitFrame, type CommitFrame } from './verify-commit.ts';
import { VerifyPool } from './verify-pool.ts';

let frames: CommitFrame[];
let key: string;
const pool = new VerifyPool(2);
beforeAll(async () => {
  const hose = await generatedFirehose(20, 5, () => {});
  frames = readFirehose(hose.file).map((b) => decodeFrame(b) as CommitFrame);
  key = hose.signingKey;
}, 120_000);
afterAll(() => pool.close());

describe('VerifyPool', () => {
  it('answers every frame of a batch as the inline check does', async () => {
    const [threaded, inline] = await Promise.all([Promise.all(frames.map((f) => pool.verify(f, key))), Promise.all(frames.map((f) => verifyCommitFrame(f, key)))]);
    expect(threaded).toHaveLength(frames.length);
    threaded.forEach((c, i) => {
      const want = inline[i]!;
      expect({ ...c, blocks: undefined }).toEqual({ ...want, blocks: undefined });
      expect([...c.blocks.keys()].sort()).toEqual([...want.blocks.keys()].sort());
      for (const [cid, bytes] of c.blocks) {
        expect(Buffer.from(bytes).equals(Buffer.from(want.blocks.get(cid)!))).toBe(true);
        expect(bytes.buffer).toBe(frames[i]!.blocks.buffer); // a view into the caller's frame, not a copy
      }
    });
  });

  it('refuses a foreign key and a broken proof with the inline errors', async () => {
    const other = (await Secp256k1Keypair.create()).did();
    const frame = frames[frames.length - 1]!;
    await expect(pool.verify(frame, other)).rejects.toBeInstanceOf(SignatureError);
    const broken = { ...frame, prevData: frames[0]!.commit };
    const err = await pool.verify(broken, key).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommitVerifyError);
    expect((err as CommitVerifyError).problem).toBe('bad-proof');
  });

  it('decides a frame changed by hand (its CIDs\' bytes now stale) by its strings, alike inline and on a thread', async () => {
    const frame = frames[frames.length - 1]!;
    const other = frames[0]!.commit;
    expect(frame.ops.length).toBeGreaterThan(0);
    const variants: [string, CommitFrame, string][] = [
      ['prevData another root', { ...frame, prevData: other }, 'bad-proof'],
      ['prevData not a CID', { ...frame, prevData: 'bafy-not-a-cid' }, 'bad-proof'],
      ['the commit another CID', { ...frame, commit: other }, 'commit-malformed'],
      ['the commit not a CID', { ...frame, commit: 'nope' }, 'commit-malformed'],
      ['an op\'s cid another CID', { ...frame, ops: frame.ops.map((op) => ({ ...op, cid: other })) }, 'bad-proof'],
      ['an op\'s prev not a CID', { ...frame, ops: frame.ops.map((op) => ({ ...op, prev: 'bafy-not-a-cid' })) }, 'commit-malformed'],
    ];
    for (const [what, changed, problem] of variants) {
      const [threaded, inline] = await Promise.all([pool.verify(changed, key).catch((e: unknown) => e), verifyCommitFrame(changed, key).catch((e: unknown) => e)]);
      expect(inline, what).toBeInstanceOf(CommitVerifyError);
      expect((inline as CommitVerifyError).problem, what).toBe(problem);
      expect(threaded, what).toBeInstanceOf(CommitVerifyError);
      expect((threaded as CommitVerifyError).problem, what).toBe(problem);
    }
    // The same frame unchanged still verifies, from its decoded bytes.
    expect((await pool.verify(frame, key)).commitCid).toBe(frame.commit);
  });

  it('refuses work once closed', async () => {
    const p = new VerifyPool(1);
    await p.verify(frames[0]!, key);
    await p.close();
    await expect(p.verify(frames[0]!, key)).rejects.toThrow(/closed/);
  });
});
