/**
 * `cidFromString` reads a repo CID's 59 characters straight and hands anything else to the
 * general parser: the answers are those of the parser alone.
 */
import { describe, expect, it } from 'vitest';
import * as CID from '@atcute/cid';
import { cidFromString, isRepoCid } from './cid.ts';

function parsed(cid: string): Uint8Array | undefined {
  try {
    const bytes = CID.fromString(cid).bytes;
    return bytes.length === 36 && isRepoCid(bytes, 0) ? bytes : undefined;
  } catch {
    return undefined;
  }
}

describe('cidFromString', () => {
  it('agrees with the general parser on repo CIDs and on strings that are not one', async () => {
    const data = new TextEncoder().encode('a block');
    const cbor = CID.toString(await CID.create(0x71, data));
    const raw = CID.toString(await CID.create(0x55, data));
    const other = `${cbor.slice(0, 10)}${cbor[10] === 'a' ? 'b' : 'a'}${cbor.slice(11)}`;
    const cases = [
      cbor,
      raw,
      other,
      cbor.toUpperCase(),
      `${cbor.slice(0, 58)}!`,
      cbor.slice(0, 58),
      `${cbor}a`,
      `z${cbor.slice(1)}`,
      'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG',
      'b' + 'a'.repeat(58),
      '',
    ];
    for (const c of cases) {
      const want = parsed(c);
      const got = cidFromString(c);
      expect(got === undefined ? undefined : [...got], c).toEqual(want === undefined ? undefined : [...want]);
    }
    expect(cidFromString(cbor)).toBeDefined();
    expect(cidFromString('b' + 'a'.repeat(58))).toBeUndefined(); // decodes to 36 bytes that are no repo CID
  });
});
