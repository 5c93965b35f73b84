/**
 * Chunks a stream body lends rather than gives: bytes in a buffer the body reuses once the
 * consumer is done with them. A consumer that knows (the HTTP server) takes the release of a
 * chunk and calls it once the socket no longer holds the bytes (the write's callback); a
 * consumer that does not know never releases, and the body then never reuses that buffer, so
 * what it kept stays as it was.
 */
const lent = new WeakMap<Uint8Array, () => void>();

/** Marks `chunk` as lent: `release` hands its buffer back for reuse. */
export function lend<T extends Uint8Array>(chunk: T, release: () => void): T {
  lent.set(chunk, release);
  return chunk;
}

/** The release of a lent chunk (once: a second call answers undefined). */
export function takeRelease(chunk: Uint8Array): (() => void) | undefined {
  const release = lent.get(chunk);
  if (release) lent.delete(chunk);
  return release;
}

/**
 * Buffers of one size kept for reuse (at most `keep` of them idle). A buffer taken is the
 * caller's until it gives it back; one never given back is just collected.
 */
export class BufferPool {
  readonly #free: Uint8Array[] = [];
  readonly size: number;
  readonly keep: number;

  constructor(size: number, keep: number) {
    this.size = size;
    this.keep = keep;
  }

  /** A buffer of at least `n` bytes: a pooled one when `n` fits the pool's size. */
  take(n: number): Uint8Array {
    if (n > this.size) return Buffer.allocUnsafeSlow(n);
    return this.#free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buf: Uint8Array): void {
    if (buf.length === this.size && this.#free.length < this.keep && !this.#free.includes(buf)) this.#free.push(buf);
  }

  /** Idle buffers held. */
  get idle(): number {
    return this.#free.length;
  }
}
