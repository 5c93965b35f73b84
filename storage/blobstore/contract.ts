/**
 * The behaviour every BlobStore shares, as one vitest suite that each implementation's test
 * file runs against a fresh store of its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { BlobStore, ByteSource } from './types.ts';
import { SOURCE_CHUNK_BYTES } from './checks.ts';
import { InvalidKeyError, RangeNotSatisfiableError } from '../errors.ts';
import { packKey } from '../keys.ts';

export interface StoreUnderTest {
  store: BlobStore;
  cleanup(): Promise<void>;
}

const bytes = (n: number) => new Uint8Array(randomBytes(n));
const text = (s: string) => new TextEncoder().encode(s);

/** Every key of a listing, page by page, checking each page's size. */
async function listAll(store: BlobStore, prefix: string, limit: number): Promise<string[][]> {
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list(prefix, { limit, ...(cursor !== undefined ? { cursor } : {}) });
    expect(page.keys.length).toBeLessThanOrEqual(limit);
    pages.push(page.keys);
    cursor = page.cursor;
  } while (cursor !== undefined && pages.length < 100);
  return pages;
}

/**
 * A source over `bytes` that records the largest piece it was asked for, and throws for a read
 * that reaches `failAt`.
 */
function sourceOf(bytes: Uint8Array, failAt?: number): ByteSource & { reads: number; largest: number } {
  const src = {
    size: bytes.length,
    reads: 0,
    largest: 0,
    read(offset: number, target: Uint8Array): void {
      src.reads++;
      src.largest = Math.max(src.largest, target.length);
      if (failAt !== undefined && offset + target.length > failAt) throw new Error('the source failed part way');
      target.set(bytes.subarray(offset, offset + target.length));
    },
  };
  return src;
}

export function blobStoreContract(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let sut: StoreUnderTest;
    let store: BlobStore;
    beforeAll(async () => {
      sut = await makeStore();
      store = sut.store;
    });
    afterAll(async () => {
      await sut?.cleanup();
    });

    it('round-trips an object under a content-derived key', async () => {
      const data = bytes(10_000);
      const key = packKey(data);
      await store.put(key, data);
      expect(await store.get(key)).toEqual(data);
      expect(await store.has(key)).toBe(true);
      expect(await store.stat(key)).toEqual({ size: data.length });
    });

    it('round-trips an empty object', async () => {
      await store.put('contract/empty', new Uint8Array(0));
      expect(await store.get('contract/empty')).toEqual(new Uint8Array(0));
      expect(await store.stat('contract/empty')).toEqual({ size: 0 });
      expect(await store.getRange('contract/empty', 0, 0)).toEqual(new Uint8Array(0));
      await expect(store.getRange('contract/empty', 0, 1)).rejects.toBeInstanceOf(RangeNotSatisfiableError);
    });

    it('reads ranges, and refuses a range past the end', async () => {
      const data = bytes(1000);
      await store.put('contract/ranged', data);
      expect(await store.getRange('contract/ranged', 0, 10)).toEqual(data.subarray(0, 10));
      expect(await store.getRange('contract/ranged', 500, 250)).toEqual(data.subarray(500, 750));
      expect(await store.getRange('contract/ranged', 999, 1)).toEqual(data.subarray(999));
      expect(await store.getRange('contract/ranged', 0, 1000)).toEqual(data);
      // Zero-length ranges: anywhere up to and including the end.
      expect(await store.getRange('contract/ranged', 1000, 0)).toEqual(new Uint8Array(0));
      expect(await store.getRange('contract/ranged', 10, 0)).toEqual(new Uint8Array(0));
      for (const [offset, length] of [[990, 11], [1000, 1], [1001, 0], [5000, 10]] as const) {
        const err = await store.getRange('contract/ranged', offset, length).catch((e: unknown) => e);
        expect(err, `${offset}+${length}`).toBeInstanceOf(RangeNotSatisfiableError);
        expect((err as RangeNotSatisfiableError).size).toBe(1000);
      }
      await expect(store.getRange('contract/ranged', -1, 1)).rejects.toBeInstanceOf(RangeError);
    });

    it('reads ranges into a caller buffer it reuses, filling exactly the range', async () => {
      const data = bytes(300_000);
      await store.put('contract/into', data);
      const buf = new Uint8Array(70_000);
      // One buffer across reads: each read leaves exactly its range, whatever was there before.
      for (const offset of [0, 70_000, 229_999, 230_000, 123]) {
        buf.fill(0xee);
        expect(await store.readInto('contract/into', offset, buf)).toBe(true);
        expect(Buffer.from(buf).equals(Buffer.from(data.subarray(offset, offset + buf.length))), `at ${offset}`).toBe(true);
      }
      const view = new Uint8Array(1000).subarray(100, 110);
      expect(await store.readInto('contract/into', 299_990, view)).toBe(true);
      expect(view).toEqual(data.subarray(299_990));
      expect(await store.readInto('contract/into', 300_000, new Uint8Array(0))).toBe(true);
      for (const [offset, length] of [[299_995, 6], [300_000, 1], [300_001, 0], [400_000, 10]] as const) {
        const err = await store.readInto('contract/into', offset, new Uint8Array(length)).catch((e: unknown) => e);
        expect(err, `${offset}+${length}`).toBeInstanceOf(RangeNotSatisfiableError);
        expect((err as RangeNotSatisfiableError).size).toBe(300_000);
      }
      await expect(store.readInto('contract/into', -1, new Uint8Array(1))).rejects.toBeInstanceOf(RangeError);
      expect(await store.readInto('contract/missing', 0, new Uint8Array(1))).toBe(false);
      expect(await store.readInto('contract-nowhere/deep/missing', 0, new Uint8Array(0))).toBe(false);
    });

    it('answers null / false for a missing key', async () => {
      expect(await store.get('contract/missing')).toBeNull();
      expect(await store.getRange('contract/missing', 0, 1)).toBeNull();
      expect(await store.has('contract/missing')).toBe(false);
      expect(await store.stat('contract/missing')).toBeNull();
      expect(await store.get('contract-nowhere/deep/missing')).toBeNull();
    });

    it('writes an object read from a source a piece at a time, byte for byte', async () => {
      for (const size of [0, 1000, SOURCE_CHUNK_BYTES, 2 * SOURCE_CHUNK_BYTES + 12_345]) {
        const data = bytes(size);
        const key = packKey(data);
        const src = sourceOf(data);
        await store.put(key, src);
        expect(Buffer.from((await store.get(key))!).equals(Buffer.from(data)), `${size} bytes`).toBe(true);
        expect(await store.stat(key)).toEqual({ size });
        // Never read whole: no copy of a large object is made.
        expect(src.largest).toBeLessThanOrEqual(SOURCE_CHUNK_BYTES);
        // The same object written whole is the same object.
        await store.put(key, data);
        expect(await store.stat(key)).toEqual({ size });
      }
    });

    it('stores nothing from a source that fails part way, and leaves an existing object as it was', async () => {
      const data = bytes(2 * SOURCE_CHUNK_BYTES + 100);
      const key = 'contract/failing-source';
      await expect(store.put(key, sourceOf(data, SOURCE_CHUNK_BYTES + 10))).rejects.toThrow(/failed part way/);
      expect(await store.has(key)).toBe(false);
      expect((await store.list('contract/failing')).keys).toEqual([]);
      const before = bytes(5000);
      await store.put(key, before);
      await expect(store.put(key, sourceOf(data, 2 * SOURCE_CHUNK_BYTES))).rejects.toThrow(/failed part way/);
      expect(await store.get(key)).toEqual(before);
      // A source whose size is not a length is refused before anything is read.
      const odd = { size: -1, read: () => {} };
      await expect(store.put('contract/odd-source', odd)).rejects.toBeInstanceOf(RangeError);
      expect(await store.has('contract/odd-source')).toBe(false);
    });

    it('accepts identical bytes written twice', async () => {
      const data = text('same bytes twice');
      await store.put('contract/twice', data);
      await store.put('contract/twice', data);
      expect(await store.get('contract/twice')).toEqual(data);
    });

    it('lists in byte order across nested prefixes, two keys a page', async () => {
      const keys = ['list/b', 'list/a-c', 'list/a/2', 'list/a/1/x', 'list/a.z', 'list/A', 'list/a/10', 'list/b0/q'];
      await Promise.all(keys.map((k) => store.put(k, text(k))));
      await store.put('listing-outside', text('x'));
      const expected = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      expect(expected).toEqual(['list/A', 'list/a-c', 'list/a.z', 'list/a/1/x', 'list/a/10', 'list/a/2', 'list/b', 'list/b0/q']);
      const pages = await listAll(store, 'list/', 2);
      expect(pages.flat()).toEqual(expected);
      expect(pages.slice(0, 4).every((p) => p.length === 2)).toBe(true);
      // A prefix that ends inside a segment, and the default limit.
      expect((await store.list('list/a')).keys).toEqual(['list/a-c', 'list/a.z', 'list/a/1/x', 'list/a/10', 'list/a/2']);
      expect((await store.list('list/a/1')).keys).toEqual(['list/a/1/x', 'list/a/10']);
      expect((await store.list('list/nothing')).keys).toEqual([]);
      // A cursor resumes after the given key, whether or not it exists.
      expect((await store.list('list/', { cursor: 'list/a/10', limit: 3 })).keys).toEqual(['list/a/2', 'list/b', 'list/b0/q']);
      expect((await store.list('list/', { cursor: 'list/a/0' })).keys).toEqual(['list/a/1/x', 'list/a/10', 'list/a/2', 'list/b', 'list/b0/q']);
      expect(await store.list('list/', { cursor: 'list/b0/q' })).toEqual({ keys: [] });
    });

    it('leaves the right bytes after concurrent puts of one key', async () => {
      const data = bytes(256 * 1024);
      const key = packKey(data);
      await Promise.all(Array.from({ length: 8 }, () => store.put(key, data)));
      expect(await store.get(key)).toEqual(data);
      expect((await store.list(key)).keys).toEqual([key]);
    });

    it('deletes, and deleting a missing key succeeds', async () => {
      await store.put('contract/deleted', text('gone soon'));
      await store.delete('contract/deleted');
      expect(await store.get('contract/deleted')).toBeNull();
      expect(await store.has('contract/deleted')).toBe(false);
      await store.delete('contract/deleted');
      await store.delete('contract-nowhere/never/was');
      expect((await store.list('contract/deleted')).keys).toEqual([]);
    });

    it('rejects invalid keys before touching storage', async () => {
      const invalid = ['', '/abs', '../up', 'a/../b', 'a//b', 'a/', './a', 'a b', 'a\\b', 'a\0b', 'é', 'x'.repeat(1025)];
      for (const key of invalid) {
        await expect(store.put(key, text('x')), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
        await expect(store.get(key), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
        await expect(store.has(key), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
        await expect(store.delete(key), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
      }
      await expect(store.list('../')).rejects.toBeInstanceOf(InvalidKeyError);
      // The whole allowed alphabet is accepted.
      await store.put('contract/Az09._,%=+-', text('ok'));
      expect(await store.get('contract/Az09._,%=+-')).toEqual(text('ok'));
    });
  });
}
