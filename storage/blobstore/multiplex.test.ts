import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { freshBucket, testStack } from '../../test/stack.ts';
import { startS3Server, type S3Server } from '../../stack/s3-server.ts';
import type { BlobStore, HealEntry, HealQueue } from './types.ts';
import { LocalBlobStore } from './local.ts';
import { S3BlobStore } from './s3.ts';
import { MultiplexBlobStore } from './multiplex.ts';
import { blobStoreContract } from './contract.ts';
import { openBlobStore } from './index.ts';
import { NoVerifiedCopyError, QuorumError, StorageError } from '../errors.ts';
import { packKey } from '../keys.ts';

class MemoryHealQueue implements HealQueue {
  entries: HealEntry[] = [];
  async record(entry: HealEntry): Promise<void> {
    this.entries.push(entry);
  }
}

const fast = { attempts: 2, baseDelayMs: 1, maxDelayMs: 5 };
const pack = () => {
  const data = new Uint8Array(randomBytes(4096));
  return { key: packKey(data), data };
};

function s3Store(bucket: string, endpoint = testStack().s3.endpoint): S3BlobStore {
  const s = testStack().s3;
  return new S3BlobStore({
    bucket,
    config: { endpoint, region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    retries: fast,
  });
}

const tempDirs: string[] = [];
async function localStore(): Promise<LocalBlobStore> {
  const dir = await mkdtemp(join(tmpdir(), 'repowalk-mux-'));
  tempDirs.push(dir);
  return new LocalBlobStore(dir);
}
afterAll(async () => {
  for (const d of tempDirs) await rm(d, { recursive: true, force: true });
});

/** A component that fails every call, as an unreachable one would. */
function brokenStore(name: string): BlobStore {
  const fail = async (): Promise<never> => {
    throw new StorageError(`${name} is down`);
  };
  return { name, get: fail, getRange: fail, readInto: fail, put: fail, has: fail, stat: fail, delete: fail, list: fail };
}

blobStoreContract('multiplex over two local directories', async () => {
  const store = new MultiplexBlobStore({ components: [await localStore(), await localStore()], writeQuorum: 2 });
  return { store, cleanup: async () => {} };
});

blobStoreContract('multiplex over local and S3', async () => {
  const s3 = s3Store(await freshBucket('mux-contract'));
  const store = new MultiplexBlobStore({ components: [await localStore(), s3], writeQuorum: 2 });
  return { store, cleanup: async () => s3.destroy() };
});

describe('MultiplexBlobStore over local directories', () => {
  it('refuses a bad quorum or two components of one name', async () => {
    const a = await localStore();
    const b = await localStore();
    expect(() => new MultiplexBlobStore({ components: [], writeQuorum: 1 })).toThrow(RangeError);
    expect(() => new MultiplexBlobStore({ components: [a, b], writeQuorum: 3 })).toThrow(RangeError);
    expect(() => new MultiplexBlobStore({ components: [a, b], writeQuorum: 0 })).toThrow(RangeError);
    expect(() => new MultiplexBlobStore({ components: [a, a], writeQuorum: 1 })).toThrow(/two components are named/);
  });

  it('lists the union of its components, sorted, without duplicates, across pages', async () => {
    const [a, b, c] = [await localStore(), await localStore(), await localStore()];
    const mux = new MultiplexBlobStore({ components: [a, b, c], writeQuorum: 1 });
    const byte = new Uint8Array([1]);
    for (const k of ['u/1', 'u/3', 'u/5', 'u/7']) await a.put(k, byte);
    for (const k of ['u/2', 'u/3', 'u/4/x', 'u/9']) await b.put(k, byte);
    for (const k of ['u/0', 'u/8', 'u/9']) await c.put(k, byte);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await mux.list('u/', { limit: 2, ...(cursor ? { cursor } : {}) });
      expect(page.keys.length).toBeLessThanOrEqual(2);
      seen.push(...page.keys);
      cursor = page.cursor;
    } while (cursor);
    expect(seen).toEqual(['u/0', 'u/1', 'u/2', 'u/3', 'u/4/x', 'u/5', 'u/7', 'u/8', 'u/9']);
  });

  it('fails a listing when a component cannot list', async () => {
    const mux = new MultiplexBlobStore({ components: [await localStore(), brokenStore('down')], writeQuorum: 1 });
    await expect(mux.list('')).rejects.toThrow(/down is down/);
  });

  it('reads past a missing copy and records it; a key missing everywhere is null and no heal entry', async () => {
    const [a, b] = [await localStore(), await localStore()];
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [a, b], writeQuorum: 1, healQueue: heal });
    const { key, data } = pack();
    await b.put(key, data);
    expect(await mux.get(key)).toEqual(data);
    expect(heal.entries).toEqual([{ key, component: a.name, reason: 'missing' }]);
    expect(await mux.get(pack().key)).toBeNull();
    expect(heal.entries).toHaveLength(1);
    expect(await mux.getRange(key, 10, 20)).toEqual(data.subarray(10, 30));
    expect(await mux.stat(key)).toEqual({ size: data.length });
    expect(await mux.hasPerComponent(key)).toEqual([
      { component: a.name, present: false },
      { component: b.name, present: true, size: data.length },
    ]);
    expect(await mux.getFromComponent(b.name, key)).toEqual(data);
    expect(await mux.getFromComponent(a.name, key)).toBeNull();
    await expect(mux.getFromComponent('nobody', key)).rejects.toThrow(/no component nobody/);
  });

  it('throws NoVerifiedCopyError when every copy is corrupt, and records each', async () => {
    const [a, b] = [await localStore(), await localStore()];
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [a, b], writeQuorum: 2, healQueue: heal });
    const { key } = pack();
    await a.put(key, new Uint8Array([1]));
    const err = await mux.get(key).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoVerifiedCopyError);
    expect((err as NoVerifiedCopyError).report.map((r) => r.state)).toEqual([expect.stringMatching(/^corrupt: sha-256 is/), 'missing']);
    expect(heal.entries.map((e) => [e.component, e.reason])).toEqual([[a.name, 'corrupt'], [b.name, 'missing']]);
  });

  it('skips a component that throws while another answers, without a heal entry for it', async () => {
    const b = await localStore();
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [brokenStore('down'), b], writeQuorum: 1, healQueue: heal });
    const { key, data } = pack();
    await mux.put(key, data);
    expect(heal.entries).toEqual([{ key, component: 'down', reason: 'missed-write', detail: 'down is down' }]);
    heal.entries = [];
    expect(await mux.get(key)).toEqual(data);
    expect(await mux.getRange(key, 0, 5)).toEqual(data.subarray(0, 5));
    const into = new Uint8Array(5);
    expect(await mux.readInto(key, 3, into)).toBe(true);
    expect(into).toEqual(data.subarray(3, 8));
    await expect(mux.readInto(pack().key, 0, into)).rejects.toBeInstanceOf(NoVerifiedCopyError);
    expect(await mux.has(key)).toBe(true);
    expect(await mux.has(pack().key)).toBe(false);
    expect(heal.entries).toEqual([]);
    expect((await mux.hasPerComponent(key))[0]).toEqual({ component: 'down', present: false, error: 'down is down' });
    // With nobody able to answer, "missing" would be a guess: these throw instead.
    await expect(mux.get(pack().key)).rejects.toBeInstanceOf(NoVerifiedCopyError);
    const alone = new MultiplexBlobStore({ components: [brokenStore('down')], writeQuorum: 1 });
    await expect(alone.has(key)).rejects.toThrow(/no component answered/);
    await expect(mux.delete(key)).rejects.toThrow(/delete .* failed on down/);
    expect(await b.has(key)).toBe(false);
  });

  it('keeps reads working when the heal queue itself fails', async () => {
    const [a, b] = [await localStore(), await localStore()];
    const failing: HealQueue = { record: async () => Promise.reject(new Error('postgres is down')) };
    const mux = new MultiplexBlobStore({ components: [a, b], writeQuorum: 1, healQueue: failing });
    const { key, data } = pack();
    await b.put(key, data);
    expect(await mux.get(key)).toEqual(data);
  });
});

describe('openBlobStore', () => {
  it('builds a multiplex from plain configuration, passing the heal queue down', async () => {
    const s = testStack().s3;
    const bucket = await freshBucket('open');
    const dir = (await localStore()).root;
    const heal = new MemoryHealQueue();
    const store = await openBlobStore(
      {
        kind: 'multiplex',
        writeQuorum: 1,
        components: [
          { kind: 's3', bucket, endpoint: s.endpoint, region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
          { kind: 'local', dir },
        ],
      },
      { healQueue: heal, s3Retries: fast },
    );
    expect(store).toBeInstanceOf(MultiplexBlobStore);
    expect(store.name).toBe(`multiplex:[s3:${bucket},local:${dir}]`);
    const { key, data } = pack();
    await new LocalBlobStore(dir).put(key, data);
    expect(await store.get(key)).toEqual(data);
    expect(heal.entries).toEqual([{ key, component: `s3:${bucket}`, reason: 'missing' }]);
    await expect(openBlobStore({ kind: 'multiplex', writeQuorum: 2, components: [{ kind: 'local', dir }] })).rejects.toThrow(RangeError);
  });
});

describe('MultiplexBlobStore over two S3 servers', () => {
  let dir: string;
  let serverA: S3Server;
  let serverB: S3Server;
  let a: S3BlobStore;
  let b: S3BlobStore;
  const startB = (port?: number) => {
    const s = testStack().s3;
    return startS3Server({ bin: s.bin, dir: join(dir, 'b'), accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, buckets: ['mux-b'], ...(port ? { port } : {}) });
  };

  beforeAll(async () => {
    const s = testStack().s3;
    dir = await mkdtemp(join(testStack().stateDir, 'mux-s3-'));
    [serverA, serverB] = await Promise.all([
      startS3Server({ bin: s.bin, dir: join(dir, 'a'), accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, buckets: ['mux-a'] }),
      startB(),
    ]);
    a = s3Store('mux-a', serverA.endpoint);
    b = s3Store('mux-b', serverB.endpoint);
  });
  afterAll(async () => {
    a?.destroy();
    b?.destroy();
    await Promise.all([serverA?.stop(), serverB?.stop()]);
  });

  it('keeps writing and reading at quorum 1 with one server down, and records the misses', async () => {
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [b, a], writeQuorum: 1, healQueue: heal });
    const before = pack();
    await mux.put(before.key, before.data);
    expect(heal.entries).toEqual([]);

    await serverB.stop();
    const during = pack();
    await mux.put(during.key, during.data);
    expect(heal.entries).toEqual([{ key: during.key, component: 's3:mux-b', reason: 'missed-write', detail: expect.stringMatching(/ECONNREFUSED/) }]);
    expect(await mux.get(during.key)).toEqual(during.data);
    expect(await mux.get(before.key)).toEqual(before.data);
    expect(await mux.has(during.key)).toBe(true);
    // Unreachable is not missing: the reads above added no heal entries.
    expect(heal.entries).toHaveLength(1);

    // Back up, B really lacks the key it missed; a read goes past it and says so.
    serverB = await startB(serverB.port);
    heal.entries = [];
    expect(await mux.get(during.key)).toEqual(during.data);
    expect(heal.entries).toEqual([{ key: during.key, component: 's3:mux-b', reason: 'missing' }]);
    expect(await mux.hasPerComponent(during.key)).toEqual([
      { component: 's3:mux-b', present: false },
      { component: 's3:mux-a', present: true, size: during.data.length },
    ]);
  });

  it('skips a corrupt copy, returns the good one, and reports the corrupt component', async () => {
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [a, b], writeQuorum: 2, healQueue: heal });
    const { key, data } = pack();
    await mux.put(key, data);
    const corrupt = data.slice();
    corrupt[100]! ^= 0xff;
    await a.put(key, corrupt);
    expect(await mux.get(key)).toEqual(data);
    expect(heal.entries).toEqual([{ key, component: 's3:mux-a', reason: 'corrupt', detail: expect.stringMatching(/^sha-256 is /) }]);
    // Ranges are not verified: they come from the first component holding the key.
    expect(await mux.getRange(key, 100, 1)).toEqual(corrupt.subarray(100, 101));
  });

  it('streams a source to each component; one down at quorum 1 misses it, is recorded, and nothing is lost', async () => {
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [b, a], writeQuorum: 1, healQueue: heal });
    const before = pack();
    await mux.put(before.key, before.data);
    await serverB.stop();
    const big = new Uint8Array(randomBytes(3 * 1024 * 1024 + 5));
    const key = packKey(big);
    let largest = 0;
    await mux.put(key, {
      size: big.length,
      read: (offset, target) => {
        largest = Math.max(largest, target.length);
        target.set(big.subarray(offset, offset + target.length));
      },
    });
    expect(largest).toBeLessThanOrEqual(1024 * 1024);
    expect(heal.entries).toEqual([{ key, component: 's3:mux-b', reason: 'missed-write', detail: expect.stringMatching(/ECONNREFUSED/) }]);
    expect(Buffer.from((await a.get(key))!).equals(Buffer.from(big))).toBe(true);
    expect(Buffer.from((await mux.get(key))!).equals(Buffer.from(big))).toBe(true);
    expect(await mux.get(before.key)).toEqual(before.data);
    serverB = await startB(serverB.port);
    expect(await b.get(before.key)).toEqual(before.data);
  });

  it('throws QuorumError naming the component that is down at quorum 2', async () => {
    const heal = new MemoryHealQueue();
    const mux = new MultiplexBlobStore({ components: [a, b], writeQuorum: 2, healQueue: heal });
    await serverB.stop();
    const { key, data } = pack();
    const err = await mux.put(key, data).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuorumError);
    expect((err as QuorumError).failures).toEqual([{ component: 's3:mux-b', error: expect.stringMatching(/ECONNREFUSED/) }]);
    expect((err as QuorumError).message).toMatch(/reached 1 components, the write quorum is 2: s3:mux-b: /);
    // A failed put is the caller's to retry, not a heal entry.
    expect(heal.entries).toEqual([]);
    serverB = await startB(serverB.port);
  });
});
