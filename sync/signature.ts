/**
 * Commit signatures on the firehose's hot path: the same check as `verifyCommitSignature`
 * (secp256k1 or P-256, low-S only), with each repo's public key parsed into an OpenSSL key object
 * once and kept, since building it cost about a third as much as the verification itself.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { parseDidKey, parsePublicMultikey } from '@atcute/crypto';
import { verifyCommitSignature, type Commit } from '../atproto/commit.ts';
import { SignatureError } from '../atproto/errors.ts';

// DER SubjectPublicKeyInfo up to the compressed point: id-ecPublicKey with the curve's OID.
const SPKI = {
  secp256k1: Buffer.from('3036301006072a8648ce3d020106052b8104000a032200', 'hex'),
  p256: Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'),
};
const HALF_N = {
  secp256k1: 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n,
  p256: 0x7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8n,
};

const keys = new Map<string, { key: KeyObject; halfN: bigint }>();

function keyFor(signingKey: string): { key: KeyObject; halfN: bigint } | undefined {
  let k = keys.get(signingKey);
  if (k) return k;
  let found;
  try {
    found = signingKey.startsWith('did:key:') ? parseDidKey(signingKey) : parsePublicMultikey(signingKey);
  } catch {
    return undefined; // the general path names the problem
  }
  if (found.publicKeyBytes.length !== 33) return undefined;
  k = { key: createPublicKey({ key: Buffer.concat([SPKI[found.type], found.publicKeyBytes]), format: 'der', type: 'spki' }), halfN: HALF_N[found.type] };
  if (keys.size > 100_000) keys.clear();
  keys.set(signingKey, k);
  return k;
}

/** @throws SignatureError as `verifyCommitSignature` */
export async function verifyCommitSignatureCached(commit: Commit, commitCid: string, signingKey: string): Promise<void> {
  const k = keyFor(signingKey);
  if (!k) return verifyCommitSignature(commit, commitCid, signingKey);
  const sig = commit.sig;
  let valid = sig.length === 64 && BigInt(`0x${Buffer.from(sig.subarray(32)).toString('hex')}`) <= k.halfN;
  if (valid) {
    try {
      valid = verify('sha256', commit.unsigned, { key: k.key, dsaEncoding: 'ieee-p1363' }, sig);
    } catch {
      valid = false;
    }
  }
  if (!valid) throw new SignatureError('signature-invalid', `commit ${commitCid}: signature does not verify with ${signingKey}`);
}
