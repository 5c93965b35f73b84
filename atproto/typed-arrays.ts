/**
 * Growing, trimming and letting go of typed arrays without leaving their old memory for the
 * garbage collector.
 *
 * A typed array grown by copying (`next.set(old)`) leaves the old one's memory allocated until
 * a collection finds its object dead; when that object has lived long enough to be promoted (the
 * index of a large repo, grown while its CAR streams in), that is a full collection, which the
 * process may not run for many MB. Verifying a 100,000-record repo left about 6 MB so, and the
 * store path's allocations were made on top of it rather than in its place. Here an array that
 * owns its whole buffer is moved into its new length (`ArrayBuffer.prototype.transfer`, a
 * reallocation: grown in place where the allocator can, and the old memory freed at once either
 * way), and an array that is no longer needed can be let go at once.
 *
 * The array passed is detached by either: nothing may keep it, or a view of its buffer.
 */

export type IntArray = Uint8Array | Uint16Array | Int32Array | Uint32Array;

/** `array`'s buffer when `array` is the whole of it (which moving it detaches) and it is a plain ArrayBuffer; else undefined. */
function ownBuffer(array: IntArray): ArrayBuffer | undefined {
  const buffer = array.buffer;
  const owned = buffer instanceof ArrayBuffer && !buffer.detached && !buffer.resizable && array.byteOffset === 0 && array.byteLength === buffer.byteLength;
  return owned ? buffer : undefined;
}

/**
 * `array`'s first `length` elements (zeros past its own), as an array of `length` of the same
 * type. Moves its memory when it owns its buffer (then `array` is detached); copies it otherwise.
 */
export function resized<T extends IntArray>(array: T, length: number): T {
  const Type = array.constructor as new (buffer: ArrayBuffer | number) => T;
  const own = ownBuffer(array);
  if (own) return new Type(own.transfer(length * array.BYTES_PER_ELEMENT));
  const next = new Type(length);
  next.set(length < array.length ? array.subarray(0, length) : array);
  return next;
}

/**
 * Frees `array`'s memory now when it owns its buffer (it is detached: length 0); otherwise
 * leaves it to the collector.
 */
export function release(array: IntArray | undefined): void {
  if (array !== undefined) ownBuffer(array)?.transfer(0);
}
