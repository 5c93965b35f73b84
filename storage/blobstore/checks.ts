/** Argument checks every blobstore implementation applies the same way, and how they read a ByteSource. */
import { RangeNotSatisfiableError } from '../errors.ts';
import type { ByteSource } from './types.ts';

export const DEFAULT_LIST_LIMIT = 1000;

/**
 * Checks a ranged read of `length` bytes at `offset` against an object of `size` bytes. A
 * zero-length range is satisfiable anywhere up to and including the end.
 * @throws {RangeError} when offset or length is not a non-negative safe integer.
 * @throws {RangeNotSatisfiableError} when the range runs past the end.
 */
export function checkRange(key: string, offset: number, length: number, size: number): void {
  checkRangeArgs(offset, length);
  if (offset + length > size) throw new RangeNotSatisfiableError(key, offset, length, size);
}

/** @throws {RangeError} when offset or length is not a non-negative safe integer. */
export function checkRangeArgs(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`range offset ${offset} is not a non-negative integer`);
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`range length ${length} is not a non-negative integer`);
}

/** @throws {RangeError} when the list limit is not a positive integer. */
export function checkLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`list limit ${limit} is not a positive integer`);
  return limit;
}

/**
 * Pieces a source is read in by the stores: large enough that a write is one system call or one
 * socket write per MiB, small enough that an object held as views is never copied whole.
 */
export const SOURCE_CHUNK_BYTES = 1024 * 1024;

/** The body's length. @throws {RangeError} when a source's size is not a non-negative safe integer. */
export function bodySize(body: Uint8Array | ByteSource): number {
  if (body instanceof Uint8Array) return body.length;
  if (!Number.isSafeInteger(body.size) || body.size < 0) throw new RangeError(`source size ${body.size} is not a non-negative integer`);
  return body.size;
}

/**
 * The source's bytes in order, `chunkBytes` at a time. With `reuse`, every chunk is the same
 * buffer, refilled: for a consumer that is done with a chunk before it asks for the next (a file
 * write that is awaited); without, each chunk is its own (a stream that may still hold it).
 */
export function* sourceChunks(source: ByteSource, opts: { chunkBytes?: number; reuse?: boolean } = {}): Generator<Uint8Array> {
  const size = bodySize(source);
  const step = opts.chunkBytes ?? SOURCE_CHUNK_BYTES;
  const shared = opts.reuse ? new Uint8Array(Math.min(step, size)) : undefined;
  for (let at = 0; at < size; at += step) {
    const n = Math.min(step, size - at);
    const chunk = shared ? shared.subarray(0, n) : new Uint8Array(n);
    source.read(at, chunk);
    yield chunk;
  }
}

/** The source's bytes in one buffer (small objects, tests). */
export function bytesOf(body: Uint8Array | ByteSource): Uint8Array {
  if (body instanceof Uint8Array) return body;
  const out = new Uint8Array(bodySize(body));
  body.read(0, out);
  return out;
}
