/**
 * What the global setup (test/global-setup.ts) hands to every test file: the addresses of the
 * real stack it started on free ports. Tests isolate themselves with their own database and
 * their own buckets, made through the helpers below.
 */
import { inject } from 'vitest';
import pg from 'pg';
import { S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';

export interface TestStack {
  /** Scratch directory of this test run (removed at teardown unless REPOWALK_KEEP_TEST_STATE=1). */
  stateDir: string;
  temporal: { address: string; namespace: string; uiUrl: string; bin: string };
  /** Superuser URL of the embedded PostgreSQL, database `postgres`. */
  databaseUrl: string;
  s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string; buckets: string[]; bin: string };
}

declare module 'vitest' {
  export interface ProvidedContext {
    stack: TestStack;
  }
}

export function testStack(): TestStack {
  return inject('stack');
}

function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`.toLowerCase();
}

/** Creates an empty database for one test file and returns its URL. */
export async function freshDatabase(prefix = 'test'): Promise<string> {
  const base = testStack().databaseUrl;
  const name = uniqueName(prefix.replace(/[^a-z0-9_]/gi, '_'));
  const client = new pg.Client({ connectionString: base });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

export function s3ClientFor(s: TestStack['s3'], endpoint = s.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: s.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
  });
}

/** Creates an empty bucket on the stack's S3 server and returns its name. */
export async function freshBucket(prefix = 'test'): Promise<string> {
  const s = testStack().s3;
  const name = uniqueName(prefix).replace(/_/g, '-');
  const client = s3ClientFor(s);
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
  return name;
}
