/**
 * Seeded byte mutations for the tests that hold a fast decoder to the general one: a failure
 * replays from its seed.
 */

/** A xorshift32 generator: `rand(n)` is an integer in [0, n). */
export function seededRandom(seed: number): (n: number) => number {
  let s = seed | 0 || 1;
  return (n) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
}

/**
 * `base` with 1 to 3 edits, each at `at(length)`: a byte replaced, a bit flipped, a byte
 * inserted, or 1 to 3 bytes removed.
 */
export function mutateBytes(base: Uint8Array, rand: (n: number) => number, at: (length: number) => number = rand): Buffer {
  let bytes = Buffer.from(base);
  for (let e = 1 + rand(3); e > 0; e--) {
    const i = at(bytes.length);
    const kind = rand(4);
    if (kind === 0) bytes[i] = rand(256);
    else if (kind === 1) bytes[i] = bytes[i]! ^ (1 << rand(8));
    else if (kind === 2) bytes = Buffer.concat([bytes.subarray(0, i), Uint8Array.of(rand(256)), bytes.subarray(i)]);
    else bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1 + rand(3))]);
  }
  return bytes;
}
