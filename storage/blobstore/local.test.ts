import { afterAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBlobStore } from './local.ts';
import { blobStoreContract } from './contract.ts';
import { StorageError } from '../errors.ts';

async function tempStore() {
  const dir = await mkdtemp(join(tmpdir(), 'repowalk-local-'));
  return { dir, store: new LocalBlobStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

blobStoreContract('local', tempStore);

describe('LocalBlobStore', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const make = async () => {
    const t = await tempStore();
    dirs.push(t.dir);
    return t;
  };

  it('stores key a/b/c as the file <root>/a/b/c and leaves no temporary files', async () => {
    const { dir, store } = await make();
    await Promise.all(Array.from({ length: 5 }, () => store.put('a/b/c', new Uint8Array([1, 2, 3]))));
    expect(await readdir(join(dir, 'a', 'b'))).toEqual(['c']);
    expect(store.name).toBe(`local:${dir}`);
  });

  it('skips stray temporary files and foreign names when listing', async () => {
    const { dir, store } = await make();
    await store.put('p/k', new Uint8Array([1]));
    await writeFile(join(dir, 'p', '.put~deadbeef'), 'half-written');
    await writeFile(join(dir, 'p', 'has space'), 'foreign');
    await mkdir(join(dir, 'p', 'empty-dir'));
    expect((await store.list('')).keys).toEqual(['p/k']);
  });

  it('reports a key that is a directory as missing, and a file-versus-directory clash as a StorageError', async () => {
    const { store } = await make();
    await store.put('x/y', new Uint8Array([1]));
    expect(await store.get('x')).toBeNull();
    expect(await store.stat('x')).toBeNull();
    expect(await store.getRange('x', 0, 0)).toBeNull();
    await store.delete('x');
    expect(await store.get('x/y')).toEqual(new Uint8Array([1]));
    await expect(store.put('x', new Uint8Array([2]))).rejects.toBeInstanceOf(StorageError);
    await expect(store.put('x/y/z', new Uint8Array([2]))).rejects.toBeInstanceOf(StorageError);
    expect(await store.get('x/y/z')).toBeNull();
  });

  // Not in the shared contract: versitygw races its checksum metadata against the data when
  // different bytes are raced onto one key (the data stays whole; reads then fail the SDK's
  // checksum check). repowalk's keys are content-derived, so its writers never race that way.
  it('leaves exactly one writer’s bytes when different bytes race onto one key', async () => {
    const { dir, store } = await make();
    const versions = Array.from({ length: 8 }, (_, i) => new Uint8Array(64 * 1024).fill(i + 1));
    await Promise.all(versions.map((v) => store.put('raced/k', v)));
    const got = await store.get('raced/k');
    expect(versions.some((v) => Buffer.compare(v, got!) === 0)).toBe(true);
    expect(await readdir(join(dir, 'raced'))).toEqual(['k']);
  });

  it('creates its root on first write', async () => {
    const { dir } = await make();
    const store = new LocalBlobStore(join(dir, 'not', 'yet'));
    expect((await store.list('')).keys).toEqual([]);
    await store.put('k', new Uint8Array([7]));
    expect(await store.get('k')).toEqual(new Uint8Array([7]));
  });
});
