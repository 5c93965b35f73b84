import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { create as createCid, toString as cidToString, CODEC_DCBOR, CODEC_RAW } from '@atcute/cid';
import { blobKey, packKey, validateKey, validatePrefix, verifyContent } from './keys.ts';
import { InvalidKeyError } from './errors.ts';

const text = (s: string) => new TextEncoder().encode(s);

describe('packKey', () => {
  it('names a pack by the SHA-256 of its bytes, fanned out by the first byte', () => {
    const hex = createHash('sha256').update('pack').digest('hex');
    expect(packKey(text('pack'))).toBe(`packs/${hex.slice(0, 2)}/${hex}.car`);
  });
});

describe('blobKey', () => {
  it('names a blob by its CID, fanned out by the first digest byte', async () => {
    const data = text('an image');
    const cid = cidToString(await createCid(CODEC_RAW, data));
    const hex = createHash('sha256').update(data).digest('hex');
    expect(blobKey(cid)).toBe(`blobs/${hex.slice(0, 2)}/${cid}`);
    validateKey(blobKey(cid));
  });

  it('refuses what is not a CIDv1 with SHA-256', () => {
    for (const bad of ['', 'bafy', 'QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG', 'x'.repeat(59)]) {
      expect(() => blobKey(bad), bad).toThrow(InvalidKeyError);
    }
  });
});

describe('validateKey', () => {
  it('accepts segments of the allowed alphabet', () => {
    for (const key of ['a', 'packs/ab/cd.car', 'A-Z_0.9,%=+', 'a/b/c/d', '.hidden', '...', 'x'.repeat(1024)]) {
      expect(() => validateKey(key), key).not.toThrow();
    }
  });

  it('names what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['', /empty/],
      ['/a', /leading \//],
      ['a/', /empty segment/],
      ['a//b', /empty segment/],
      ['..', /segment \.\./],
      ['a/./b', /segment \./],
      ['a b', /characters/],
      ['a\\b', /characters/],
      ['ü', /characters/],
      ['a\nb', /characters/],
      ['x'.repeat(1025), /longer than 1024/],
    ];
    for (const [key, reason] of cases) {
      expect(() => validateKey(key), JSON.stringify(key)).toThrow(reason);
      expect(() => validateKey(key)).toThrow(InvalidKeyError);
    }
  });

  it('accepts listing prefixes that end in / or inside a segment', () => {
    for (const p of ['', 'packs/', 'packs/a', 'packs/ab/']) expect(() => validatePrefix(p), p).not.toThrow();
    for (const p of ['/', '../', 'a//', 'a b']) expect(() => validatePrefix(p), p).toThrow(InvalidKeyError);
  });
});

describe('verifyContent', () => {
  it('checks pack bytes against the key', () => {
    const data = text('pack bytes');
    expect(verifyContent(packKey(data), data)).toEqual({ ok: true });
    const bad = verifyContent(packKey(data), text('pack bytez'));
    expect(bad.ok).toBe(false);
    expect(bad).toMatchObject({ reason: expect.stringMatching(/sha-256 is [0-9a-f]{64}/) });
  });

  it('checks blob bytes against the CID, raw or DAG-CBOR', async () => {
    for (const codec of [CODEC_RAW, CODEC_DCBOR] as const) {
      const data = text(`blob ${codec}`);
      const key = blobKey(cidToString(await createCid(codec, data)));
      expect(verifyContent(key, data)).toEqual({ ok: true });
      expect(verifyContent(key, text('other')).ok).toBe(false);
    }
  });

  it('refuses a pack or blob key whose fan-out directory does not match its hash', async () => {
    const data = text('x');
    const key = packKey(data);
    const wrongFanout = key.replace(/^packs\/../, key.startsWith('packs/00') ? 'packs/01' : 'packs/00');
    expect(verifyContent(wrongFanout, data)).toMatchObject({ ok: false, reason: /fan-out/ });
    const blob = blobKey(cidToString(await createCid(CODEC_RAW, data)));
    const wrongBlob = blob.replace(/^blobs\/../, blob.startsWith('blobs/00') ? 'blobs/01' : 'blobs/00');
    expect(verifyContent(wrongBlob, data)).toMatchObject({ ok: false, reason: /fan-out/ });
  });

  it('leaves keys without a hash unchecked', () => {
    expect(verifyContent('test/anything', text('x'))).toEqual({ ok: true, unchecked: true });
    expect(verifyContent('packs/ab/short.car', text('x'))).toEqual({ ok: true, unchecked: true });
  });
});
