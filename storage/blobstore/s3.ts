/**
 * A blobstore in an S3 bucket (AWS, or any S3-compatible server such as versitygw or MinIO).
 *
 * Transient failures (HTTP 429 and 5xx, SlowDown and other throttling codes, connection resets
 * and refusals, timeouts) are retried a bounded number of times with exponential backoff and
 * full jitter; the SDK's own retries are turned off on clients this module creates, so the two
 * do not multiply. Every other failure is a StorageError whose message names the store,
 * operation and key, and never the secret key.
 *
 * Limitation: S3 answers HEAD with a bare 404 both for a missing key and for a missing bucket,
 * so `stat` and `has` cannot tell the two apart; `get` and `list` can, and throw on a missing
 * bucket.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Readable } from 'node:stream';
import type { BlobStore, ByteSource, ListOptions, ListPage } from './types.ts';
import { RangeNotSatisfiableError, StorageError } from '../errors.ts';
import { validateKey, validatePrefix } from '../keys.ts';
import { bodySize, bytesOf, checkLimit, checkRange, checkRangeArgs, DEFAULT_LIST_LIMIT, SOURCE_CHUNK_BYTES, sourceChunks } from './checks.ts';

/** The largest object one PutObject stores (5 GiB). */
export const PUT_MAX_BYTES = 5 * 1024 ** 3;

export interface S3Config {
  endpoint?: string;
  region: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most self-hosted servers need. */
  forcePathStyle?: boolean;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface RetryOptions {
  /** Tries in all, including the first (default 4). */
  attempts?: number;
  /** The first backoff's upper bound; each retry doubles it (default 100 ms). */
  baseDelayMs?: number;
  /** Cap on one backoff (default 2000 ms). */
  maxDelayMs?: number;
}

export interface S3BlobStoreOptions {
  bucket: string;
  /** A client to use (the caller owns it), or the settings to make one (this store owns it). */
  client?: S3Client;
  config?: S3Config;
  /** Prepended to every key, e.g. `repowalk/`; listings strip it again. */
  prefix?: string;
  retries?: RetryOptions;
  /** Overrides the store's name (default `s3:<bucket>`), e.g. to tell two regions apart in a multiplex. */
  name?: string;
  /** Timeouts of clients this store makes: connecting (default 5 s) and socket idle (default 120 s). */
  timeouts?: { connectMs?: number; idleMs?: number };
}

const THROTTLING = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestTimeout',
  'ServiceUnavailable',
  'InternalError',
  'TimeoutError',
]);
const CONNECTION = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN']);

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  cause?: unknown;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkError).$metadata?.httpStatusCode;
}

/** Whether a failed request may succeed if sent again. */
export function isTransient(err: unknown): boolean {
  const e = err as SdkError;
  const status = statusOf(err);
  if (status === 429 || (status !== undefined && status >= 500)) return true;
  if (THROTTLING.has(e.name ?? '')) return true;
  if (CONNECTION.has(e.code ?? '') || (e.cause !== undefined && CONNECTION.has((e.cause as SdkError).code ?? ''))) return true;
  return false;
}

function isAbsent(err: unknown): boolean {
  const name = (err as SdkError).name;
  return name === 'NoSuchKey' || name === 'NotFound';
}

function isRangeError(err: unknown): boolean {
  return statusOf(err) === 416 || (err as SdkError).name === 'InvalidRange';
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class S3BlobStore implements BlobStore {
  readonly name: string;
  readonly bucket: string;
  readonly prefix: string;
  // Private fields stay out of util.inspect and JSON, so logging the store cannot leak the secret.
  readonly #client: S3Client;
  readonly #ownsClient: boolean;
  readonly #secret: string | undefined;
  readonly #retry: Required<RetryOptions>;

  constructor(opts: S3BlobStoreOptions) {
    if (!opts.bucket) throw new StorageError('S3BlobStore needs a bucket');
    this.bucket = opts.bucket;
    this.prefix = opts.prefix ?? '';
    if (this.prefix !== '') validatePrefix(this.prefix);
    this.name = opts.name ?? `s3:${opts.bucket}`;
    this.#retry = { attempts: 4, baseDelayMs: 100, maxDelayMs: 2000, ...opts.retries };
    if (opts.client) {
      this.#client = opts.client;
      this.#ownsClient = false;
    } else if (opts.config) {
      const c = opts.config;
      this.#secret = c.secretAccessKey;
      this.#ownsClient = true;
      this.#client = new S3Client({
        ...(c.endpoint ? { endpoint: c.endpoint } : {}),
        region: c.region,
        forcePathStyle: c.forcePathStyle ?? false,
        credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
        maxAttempts: 1,
        requestHandler: { connectionTimeout: opts.timeouts?.connectMs ?? 5000, requestTimeout: opts.timeouts?.idleMs ?? 120_000 },
      });
    } else {
      throw new StorageError('S3BlobStore needs a client or a config');
    }
  }

  /** Releases the connections of a client this store made; a client passed in is left to its owner. */
  destroy(): void {
    if (this.#ownsClient) this.#client.destroy();
  }

  async get(key: string): Promise<Uint8Array | null> {
    const Key = this.objectKey(key);
    return this.retrying('get', key, async () => {
      try {
        const res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
        return await bodyBytes(res.Body);
      } catch (err) {
        if (isAbsent(err)) return null;
        throw err;
      }
    });
  }

  async getRange(key: string, offset: number, length: number): Promise<Uint8Array | null> {
    const Key = this.objectKey(key);
    checkRangeArgs(offset, length);
    // HTTP cannot express an empty range; the size alone answers it.
    if (length === 0) {
      const st = await this.stat(key);
      if (st) checkRange(key, offset, length, st.size);
      return st && new Uint8Array(0);
    }
    const result = await this.retrying('getRange', key, async () => {
      try {
        const Range = `bytes=${offset}-${offset + length - 1}`;
        const res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range }));
        const bytes = await bodyBytes(res.Body);
        return { bytes, contentRange: res.ContentRange };
      } catch (err) {
        if (isAbsent(err)) return null;
        if (isRangeError(err)) return 'past-end' as const;
        throw err;
      }
    });
    if (result === null) return null;
    if (result === 'past-end') {
      // A 416 carries no size we can rely on; ask for it (the key may also have just gone).
      const st = await this.stat(key);
      if (!st) return null;
      throw new RangeNotSatisfiableError(key, offset, length, st.size);
    }
    let { bytes } = result;
    // S3 clips a range that starts inside the object but ends past it: a short body means past the end.
    const total = /\/(\d+)$/.exec(result.contentRange ?? '')?.[1];
    if (result.contentRange === undefined && bytes.length > length) {
      // The server ignored Range and sent the whole object.
      checkRange(key, offset, length, bytes.length);
      bytes = bytes.subarray(offset, offset + length);
    }
    if (bytes.length !== length) {
      const size = total !== undefined ? Number(total) : offset + bytes.length;
      if (offset + length > size) throw new RangeNotSatisfiableError(key, offset, length, size);
      throw new StorageError(`${this.name} getRange ${key}: asked for ${length} bytes, got ${bytes.length}`);
    }
    return bytes;
  }

  /**
   * {@link getRange} into the caller's buffer: the ranged GET's body is copied into `target`
   * as it arrives (no whole-range buffer, no concat). A retry refills it from the start.
   */
  async readInto(key: string, offset: number, target: Uint8Array): Promise<boolean> {
    const Key = this.objectKey(key);
    const length = target.length;
    checkRangeArgs(offset, length);
    if (length === 0) {
      const st = await this.stat(key);
      if (st) checkRange(key, offset, length, st.size);
      return st !== null;
    }
    const result = await this.retrying('readInto', key, async () => {
      try {
        const Range = `bytes=${offset}-${offset + length - 1}`;
        const res = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range }));
        // A server that ignored Range sends the whole object: its bytes before `offset` are skipped.
        const skip = res.ContentRange === undefined ? offset : 0;
        const { got, seen } = await bodyInto(res.Body, target, skip);
        return { got, seen, contentRange: res.ContentRange };
      } catch (err) {
        if (isAbsent(err)) return null;
        if (isRangeError(err)) return 'past-end' as const;
        throw err;
      }
    });
    if (result === null) return false;
    if (result === 'past-end') {
      const st = await this.stat(key);
      if (!st) return false;
      throw new RangeNotSatisfiableError(key, offset, length, st.size);
    }
    if (result.got !== length) {
      const total = /\/(\d+)$/.exec(result.contentRange ?? '')?.[1];
      // Short: the whole body was read, so without a Content-Range its length is the object's.
      const size = total !== undefined ? Number(total) : result.contentRange === undefined ? result.seen : offset + result.got;
      if (result.got < length && offset + length > size) throw new RangeNotSatisfiableError(key, offset, length, size);
      throw new StorageError(`${this.name} readInto ${key}: asked for ${length} bytes, got ${result.got}`);
    }
    return true;
  }

  /**
   * One PutObject. A source larger than {@link SOURCE_CHUNK_BYTES} is the request's body as a
   * stream of chunks read from it as the socket takes them (its length declared, so a body that
   * ends early is refused by the server rather than stored short); each attempt reads it again.
   * A smaller one is read whole first.
   * @throws {StorageError} for a body over {@link PUT_MAX_BYTES} (PutObject's limit).
   */
  async put(key: string, body: Uint8Array | ByteSource): Promise<void> {
    const Key = this.objectKey(key);
    const size = bodySize(body);
    if (size > PUT_MAX_BYTES) throw new StorageError(`${this.name} put ${key}: ${size} bytes is over the ${PUT_MAX_BYTES} bytes one PutObject takes`);
    const whole = body instanceof Uint8Array ? body : size <= SOURCE_CHUNK_BYTES ? bytesOf(body) : undefined;
    await this.retrying('put', key, async () => {
      if (whole) return this.#client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: whole, ContentLength: size }));
      // The SDK pipes the body into the request (through a stream of its own that adds the
      // checksum), and neither passes a failure on as one: a source that throws aborts the
      // request here, and its stream neither ends (which would send a short body) nor errors.
      const abort = new AbortController();
      let failed: unknown;
      const stream = sourceStream(body as ByteSource, (err) => {
        failed = err;
        abort.abort();
      });
      try {
        return await this.#client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: stream, ContentLength: size }), { abortSignal: abort.signal });
      } catch (err) {
        if (failed !== undefined) throw new StorageError(this.redact(`${this.name} put ${key}: reading the body failed: ${(failed as Error).message ?? String(failed)}`));
        throw err;
      } finally {
        stream.destroy();
      }
    });
  }

  async has(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async stat(key: string): Promise<{ size: number } | null> {
    const Key = this.objectKey(key);
    return this.retrying('stat', key, async () => {
      try {
        const res = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
        return { size: res.ContentLength ?? 0 };
      } catch (err) {
        if (isAbsent(err)) return null;
        throw err;
      }
    });
  }

  async delete(key: string): Promise<void> {
    const Key = this.objectKey(key);
    await this.retrying('delete', key, () => this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })));
  }

  /**
   * Keys in ascending byte order (S3 lists in UTF-8 byte order). The cursor is the last key
   * returned, sent back as StartAfter, so it is meaningful to other stores too (see multiplex).
   */
  async list(prefix: string, opts: ListOptions = {}): Promise<ListPage> {
    validatePrefix(prefix);
    const limit = checkLimit(opts.limit ?? DEFAULT_LIST_LIMIT);
    let token: string | undefined;
    for (;;) {
      const res = await this.retrying('list', prefix, () =>
        this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            MaxKeys: Math.min(limit, 1000),
            ...(token ? { ContinuationToken: token } : opts.cursor !== undefined ? { StartAfter: this.prefix + opts.cursor } : {}),
          }),
        ),
      );
      const keys = (res.Contents ?? []).flatMap((o) => (o.Key ? [o.Key.slice(this.prefix.length)] : []));
      const last = keys[keys.length - 1];
      if (last !== undefined) return res.IsTruncated ? { keys, cursor: last } : { keys };
      // An empty but truncated page is legal S3; follow the token until keys or the end.
      if (!res.IsTruncated || !res.NextContinuationToken) return { keys };
      token = res.NextContinuationToken;
    }
  }

  private objectKey(key: string): string {
    validateKey(key);
    return this.prefix + key;
  }

  /** Runs `attempt`, retrying transient failures; any other failure becomes a StorageError. */
  private async retrying<T>(op: string, key: string, attempt: () => Promise<T>): Promise<T> {
    const { attempts, baseDelayMs, maxDelayMs } = this.#retry;
    for (let i = 1; ; i++) {
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof StorageError) throw err;
        if (i >= attempts || !isTransient(err)) throw this.wrap(op, key, err, i);
        // Full jitter: spread retries of many workers instead of having them collide again.
        await sleep(Math.random() * Math.min(maxDelayMs, baseDelayMs * 2 ** (i - 1)));
      }
    }
  }

  private wrap(op: string, key: string, err: unknown, attempts: number): StorageError {
    const e = err as SdkError;
    const status = statusOf(err);
    const what = [e.name, e.code, status !== undefined ? `HTTP ${status}` : undefined].filter(Boolean).join(' ');
    const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
    // The cause is left off on purpose: SDK errors carry request and response objects that
    // should not travel into logs and workflow histories.
    return new StorageError(this.redact(`${this.name} ${op} ${key}: ${what}: ${e.message ?? String(err)}${tries}`));
  }

  private redact(text: string): string {
    return this.#secret ? text.split(this.#secret).join('[redacted]') : text;
  }
}

/**
 * `source` as a byte stream, a chunk of {@link SOURCE_CHUNK_BYTES} read as the consumer asks for
 * one. A read that throws calls `onError` and leaves the stream waiting: no 'error' event, no end.
 */
function sourceStream(source: ByteSource, onError: (err: unknown) => void): Readable {
  const chunks = sourceChunks(source);
  return new Readable({
    read() {
      let next: IteratorResult<Uint8Array>;
      try {
        next = chunks.next();
      } catch (err) {
        onError(err);
        return;
      }
      this.push(next.done ? null : next.value);
    },
  });
}

async function bodyBytes(body: unknown): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const bytes = await (body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Copies a response body into `target`, after skipping its first `skip` bytes. `got`: the bytes
 * copied (`target.length + 1` when the body holds more than the range: the rest is not read);
 * `seen`: the body's bytes, all of them when `got` is short.
 */
async function bodyInto(body: unknown, target: Uint8Array, skip: number): Promise<{ got: number; seen: number }> {
  if (!body) return { got: 0, seen: 0 };
  let at = 0;
  let seen = 0;
  const stream = body as AsyncIterable<Uint8Array> & { destroy?: () => void };
  for await (const chunk of stream) {
    const from = Math.max(0, Math.min(chunk.length, skip - seen));
    seen += chunk.length;
    const c = chunk.subarray(from);
    const room = target.length - at;
    if (c.length > room) {
      target.set(c.subarray(0, room), at);
      stream.destroy?.();
      // A whole object sent for a range has bytes after it; a range response does not.
      return { got: skip > 0 ? target.length : target.length + 1, seen };
    }
    target.set(c, at);
    at += c.length;
  }
  return { got: at, seen };
}
