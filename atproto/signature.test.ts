/**
 * The hot-path signature check agrees with atproto's rules on both curves and with every
 * backend present: a good signature passes; another message, another key, a flipped bit and the
 * high-S twin of a good signature (valid ECDSA, refused by atproto) fail as SignatureError.
 */
import { describe, expect, it } from 'vitest';
import { createPublicKey } from 'node:crypto';
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto';
import { parseDidKey } from '@atcute/crypto';
import { toBase58Btc } from '@atcute/multibase';
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

    it(`${curve}: a key decoded already (as the DID document's reader gives it) checks the same, decoding nothing`, async () => {
      const keypair = await make();
      const other = await make();
      const unsigned = new TextEncoder().encode(`a commit of ${curve}, decoded key`);
      const sig = await keypair.sign(unsigned);
      const decoded = (didKey: string) => ({ didKey, type: curve, point: parseDidKey(didKey).publicKeyBytes });
      const check = (u: Uint8Array, s: Uint8Array, key = decoded(keypair.did())) => verifyCommitSignature(commitOf(u, s), 'bafycid', key, backend);

      await expect(check(unsigned, sig)).resolves.toBeUndefined();
      await expect(check(new TextEncoder().encode('another commit'), sig)).rejects.toBeInstanceOf(SignatureError);
      await expect(check(unsigned, sig, decoded(other.did()))).rejects.toThrow(other.did());
      const flipped = new Uint8Array(sig);
      flipped[40]! ^= 1;
      await expect(check(unsigned, flipped)).rejects.toBeInstanceOf(SignatureError);
      await expect(check(unsigned, highS(sig, N[curve]))).rejects.toThrow(/does not verify/);
      // The point is what is checked, not the did:key beside it (the two must be one key).
      await expect(check(unsigned, sig, { ...decoded(keypair.did()), point: parseDidKey(other.did()).publicKeyBytes })).rejects.toBeInstanceOf(SignatureError);
    });
  }

  it('secp256k1: refuses a key whose point is not on the curve, and checks a key first seen by the other backend', async () => {
    const keypair = await Secp256k1Keypair.create();
    const unsigned = new TextEncoder().encode('a commit');
    const sig = await keypair.sign(unsigned);
    // An x with no y on the curve: OpenSSL refuses the point, libsecp256k1 cannot parse it.
    const SPKI = Buffer.from('3036301006072a8648ce3d020106052b8104000a032200', 'hex');
    let point: Uint8Array | undefined;
    for (let x = 1; point === undefined; x++) {
      const p = new Uint8Array(33);
      p[0] = 2;
      p[32] = x;
      try {
        createPublicKey({ key: Buffer.concat([SPKI, p]), format: 'der', type: 'spki' });
      } catch {
        point = p;
      }
    }
    const offCurve = `did:key:z${toBase58Btc(new Uint8Array([0xe7, 0x01, ...point]))}`;
    for (let i = 0; i < 2; i++) await expect(verifyCommitSignature(commitOf(unsigned, sig), 'bafycid', offCurve, backend)).rejects.toBeInstanceOf(SignatureError);
    // Decoded already, the same point is refused too, and the message names the key.
    await expect(verifyCommitSignature(commitOf(unsigned, sig), 'bafycid', { didKey: offCurve, type: 'secp256k1', point }, backend)).rejects.toThrow(offCurve);
    // The key parsed (and kept) by one backend, then checked by every one.
    for (const other of backends) await expect(verifyCommitSignature(commitOf(unsigned, sig), 'bafycid', keypair.did(), other)).resolves.toBeUndefined();
    await expect(verifyCommitSignature(commitOf(unsigned, sig), 'bafycid', keypair.did(), 'openssl')).resolves.toBeUndefined();
  });
});
