import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { freshBucket, s3ClientFor, testStack } from '../../test/stack.ts';
import { S3BlobStore, type S3BlobStoreOptions } from './s3.ts';
import { blobStoreContract } from './contract.ts';
import { StorageError } from '../errors.ts';

const fast = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };

function storeFor(bucket: string, extra: Partial<S3BlobStoreOptions> = {}, endpoint?: string): S3BlobStore {
  const s = testStack().s3;
  return new S3BlobStore({
    bucket,
    config: { endpoint: endpoint ?? s.endpoint, region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    retries: fast,
    ...extra,
  });
}

blobStoreContract('s3', async () => {
  const store = storeFor(await freshBucket('contract'));
  return { store, cleanup: async () => store.destroy() };
});

blobStoreContract('s3 with a key prefix', async () => {
  const store = storeFor(await freshBucket('contract-prefix'), { prefix: 'mirror/' });
  return { store, cleanup: async () => store.destroy() };
});

type Fault = 'slowdown' | '429' | 'reset' | '500';

/**
 * An HTTP proxy in front of the stack's S3 server that answers the next requests with the
 * queued faults, then passes requests through unchanged (the Host header included, so the
 * SigV4 signature still holds).
 */
async function faultProxy(upstream: string): Promise<{ endpoint: string; faults: Fault[]; requests: number; close(): Promise<void> }> {
  const up = new URL(upstream);
  const state = { faults: [] as Fault[], requests: 0 };
  const server: Server = createServer((req, res) => {
    state.requests++;
    const fault = state.faults.shift();
    if (fault === 'reset') return void req.socket.destroy();
    if (fault) {
      const [status, code] = fault === 'slowdown' ? [503, 'SlowDown'] : fault === '429' ? [429, 'TooManyRequests'] : [500, 'InternalError'];
      res.writeHead(status, { 'content-type': 'application/xml' });
      return void res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`);
    }
    const out = request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    out.on('error', () => req.socket.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get faults() {
      return state.faults;
    },
    get requests() {
      return state.requests;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('S3BlobStore', () => {
  let bucket: string;
  let store: S3BlobStore;
  beforeAll(async () => {
    bucket = await freshBucket('s3store');
    store = storeFor(bucket);
  });
  afterAll(() => store?.destroy());

  it('is named s3:<bucket>, and stores prefixed keys under the prefix', async () => {
    expect(store.name).toBe(`s3:${bucket}`);
    const prefixed = storeFor(bucket, { prefix: 'pre/fix/' });
    await prefixed.put('k', new Uint8Array([1, 2]));
    const client = s3ClientFor(testStack().s3);
    const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'pre/fix/k' }));
    expect(await res.Body!.transformToByteArray()).toEqual(new Uint8Array([1, 2]));
    expect((await prefixed.list('')).keys).toEqual(['k']);
    client.destroy();
    prefixed.destroy();
  });

  it('throws for a missing bucket rather than answering "missing key"', async () => {
    const nowhere = storeFor('no-such-bucket-here');
    await expect(nowhere.get('k')).rejects.toThrow(/NoSuchBucket/);
    await expect(nowhere.list('')).rejects.toBeInstanceOf(StorageError);
    nowhere.destroy();
  });

  describe('retries', () => {
    let proxy: Awaited<ReturnType<typeof faultProxy>>;
    let viaProxy: S3BlobStore;
    beforeAll(async () => {
      proxy = await faultProxy(testStack().s3.endpoint);
      viaProxy = storeFor(bucket, {}, proxy.endpoint);
    });
    afterAll(async () => {
      viaProxy?.destroy();
      await proxy?.close();
    });

    it('retries SlowDown, 429, 500 and connection resets, then succeeds', async () => {
      const data = new TextEncoder().encode('through the faults');
      proxy.faults.push('slowdown', '429', 'reset');
      const before = proxy.requests;
      await viaProxy.put('retry/k', data);
      expect(proxy.requests - before).toBe(4);
      proxy.faults.push('500', 'reset');
      expect(await viaProxy.get('retry/k')).toEqual(data);
      proxy.faults.push('slowdown');
      expect(await viaProxy.getRange('retry/k', 0, 7)).toEqual(data.subarray(0, 7));
      // A ranged read into a buffer, retried: the buffer holds the range, whatever a failed try left.
      proxy.faults.push('500', 'reset');
      const into = new Uint8Array(6).fill(0xee);
      expect(await viaProxy.readInto('retry/k', 4, into)).toBe(true);
      expect(into).toEqual(data.subarray(4, 10));
      proxy.faults.push('429');
      expect((await viaProxy.list('retry/')).keys).toEqual(['retry/k']);
    });

    it('gives up after the configured attempts, saying why', async () => {
      proxy.faults.push('slowdown', 'slowdown', 'slowdown', 'slowdown', 'slowdown');
      const before = proxy.requests;
      const err = await viaProxy.get('retry/k').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect((err as Error).message).toMatch(/SlowDown.*after 4 attempts/);
      expect(proxy.requests - before).toBe(4);
      proxy.faults.length = 0;
    });

    it('does not retry errors that will not go away', async () => {
      const lost = storeFor('no-such-bucket-either', {}, proxy.endpoint);
      const before = proxy.requests;
      await expect(lost.get('k')).rejects.toThrow(/NoSuchBucket/);
      expect(proxy.requests - before).toBe(1);
      lost.destroy();
    });
  });

  describe('secrets', () => {
    const secret = 'sEcReT-do-not-log-0123456789abcdef';

    /** Every way an error or a store might end up in a log. */
    const renderings = (x: unknown) => [String(x), (x as Error).message ?? '', (x as Error).stack ?? '', inspect(x, { depth: 10, showHidden: true }), JSON.stringify(x) ?? ''];

    it('keeps the secret key out of errors and the store itself', async () => {
      const s = testStack().s3;
      const wrongSecret = new S3BlobStore({
        bucket,
        config: { endpoint: s.endpoint, region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: secret },
        retries: fast,
      });
      const refused = new S3BlobStore({
        bucket,
        config: { endpoint: 'http://127.0.0.1:9', region: s.region, forcePathStyle: true, accessKeyId: s.accessKeyId, secretAccessKey: secret },
        retries: fast,
      });
      const errors = [
        await wrongSecret.get('k').catch((e: unknown) => e),
        await wrongSecret.put('k', new Uint8Array([1])).catch((e: unknown) => e),
        await wrongSecret.list('').catch((e: unknown) => e),
        await refused.get('k').catch((e: unknown) => e),
        await store.get('../k').catch((e: unknown) => e),
        await storeFor('no-such-bucket').get('k').catch((e: unknown) => e),
      ];
      expect((errors[0] as Error).message).toMatch(/SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId/);
      expect((errors[3] as Error).message).toMatch(/ECONNREFUSED.*after 4 attempts/);
      for (const err of errors) {
        expect(err).toBeInstanceOf(Error);
        for (const text of renderings(err)) {
          expect(text).not.toContain(secret);
          expect(text).not.toContain(s.secretAccessKey);
        }
      }
      for (const text of [wrongSecret.name, inspect(wrongSecret, { depth: 10 }), JSON.stringify(wrongSecret)]) expect(text).not.toContain(secret);
      wrongSecret.destroy();
      refused.destroy();
    });
  });
});
