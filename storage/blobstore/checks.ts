/** Argument checks every blobstore implementation applies the same way. */
import { RangeNotSatisfiableError } from '../errors.ts';

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
