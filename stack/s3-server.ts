/**
 * A real S3-compatible server for development and tests: versitygw over a local directory,
 * bound to loopback. Object metadata goes to a sidecar directory, so the data directory
 * needs no extended-attribute support from its file system.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Client, CreateBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3';
import { spawnLogged, waitFor } from './process.ts';
import { freePort } from '../config/free-port.ts';

export interface S3ServerOptions {
  bin: string;
  /** Directory holding `data/`, `meta/` and `versitygw.log`. */
  dir: string;
  port?: number;
  accessKeyId: string;
  secretAccessKey: string;
  region?: string;
  /** Buckets to create once the server answers. */
  buckets?: string[];
}

export interface S3Server {
  endpoint: string;
  port: number;
  stop(): Promise<void>;
}

export async function startS3Server(opts: S3ServerOptions): Promise<S3Server> {
  const port = opts.port ?? (await freePort());
  const data = join(opts.dir, 'data');
  const meta = join(opts.dir, 'meta');
  await mkdir(data, { recursive: true });
  await mkdir(meta, { recursive: true });
  const logFile = join(opts.dir, 'versitygw.log');
  const child = spawnLogged('versitygw', opts.bin, ['--port', `127.0.0.1:${port}`, 'posix', '--sidecar', meta, data], {
    env: { ...process.env, ROOT_ACCESS_KEY: opts.accessKeyId, ROOT_SECRET_KEY: opts.secretAccessKey },
    logFile,
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new S3Client({
    endpoint,
    region: opts.region ?? 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey },
    maxAttempts: 1,
  });
  try {
    await waitFor(`S3 server on ${endpoint}`, async () => {
      await client.send(new ListBucketsCommand({}));
      return true;
    }, 30_000, child, logFile);
    const existing = new Set(((await client.send(new ListBucketsCommand({}))).Buckets ?? []).map((b) => b.Name));
    for (const bucket of opts.buckets ?? []) {
      if (!existing.has(bucket)) await client.send(new CreateBucketCommand({ Bucket: bucket }));
    }
  } catch (err) {
    await child.stop();
    throw err;
  } finally {
    client.destroy();
  }
  return { endpoint, port, stop: () => child.stop() };
}
