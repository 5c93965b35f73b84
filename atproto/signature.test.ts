/**
 * The hot-path signature check agrees with atproto's rules on both curves and with every
 * backend present: a good signature passes; another message, another key, a flipped bit and the
 * high-S twin of a good signature (valid ECDSA, refused by atproto) fail as SignatureError.
 */
import { describe, expect, it } from 'vitest';
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto';
import type { Commit } from './commit.ts';
import { SignatureError } from './errors.ts';
import { secp256k1Backend, verifyCommitSignature, type SignatureBackend } from './signature.ts';

const N = {
  secp256k1: 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n,
  p256: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
};

function commitOf(unsigned: Uint8Array, sig: Uint8Array): Commit {
  return { unsigned, sig } as unknown as Commit;
}

/** The same signature with s replaced by n - s: it verifies as plain ECDSA, atproto refuses it. */
function highS(sig: Uint8Array, n: bigint): Uint8Array {
  const s = BigInt(`0x${Buffer.from(sig.subarray(32)).toString('hex')}`);
  const out = new Uint8Array(sig);
  out.set(Buffer.from((n - s).toString(16).padStart(64, '0'), 'hex'), 32);
  return out;
}

const backends: SignatureBackend[] = secp256k1Backend === 'libsecp256k1' ? ['libsecp256k1', 'openssl'] : ['openssl'];

describe.each(backends)('verifyCommitSignature (%s for secp256k1)', (backend) => {
  for (const [curve, make] of [
    ['secp256k1', () => Secp256k1Keypair.create()],
    ['p256', () => P256Keypair.create()],
  ] as const) {
    it(`${curve}: accepts a good signature, refuses every bad one`, async () => {
      const keypair = await make();
      const other = await make();
      const unsigned = new TextEncoder().encode(`a commit of ${curve}`);
      const sig = await keypair.sign(unsigned);
      const check = (u: Uint8Array, s: Uint8Array, key = keypair.did()) => verifyCommitSignature(commitOf(u, s), 'bafycid', key, backend);

      await expect(check(unsigned, sig)).resolves.toBeUndefined();
      await expect(check(unsigned, sig)).resolves.toBeUndefined(); // from the key cache
      await expect(check(new TextEncoder().encode('another commit'), sig)).rejects.toBeInstanceOf(SignatureError);
      await expect(check(unsigned, sig, other.did())).rejects.toBeInstanceOf(SignatureError);
      const flipped = new Uint8Array(sig);
      flipped[10]! ^= 1;
      await expect(check(unsigned, flipped)).rejects.toBeInstanceOf(SignatureError);
      await expect(check(unsigned, highS(sig, N[curve]))).rejects.toThrow(/does not verify/);
      await expect(check(unsigned, sig.subarray(0, 63))).rejects.toBeInstanceOf(SignatureError);
    });
  }
});
