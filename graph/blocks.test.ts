import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { cidMapKey, cidWord, keyWord } from './blocks.ts';

describe('cidWord and keyWord', () => {
  it('give the same word for a CID and its map key, from the digest bytes 4..7', () => {
    for (let i = 0; i < 100; i++) {
      const cid = new Uint8Array(randomBytes(36));
      expect(keyWord(cidMapKey(cid))).toBe(cidWord(cid));
      expect(cidWord(cid)).toBe(Buffer.from(cid).readUInt32BE(4));
    }
  });
});
