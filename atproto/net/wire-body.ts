/**
 * A response body's chunks as they come off the socket, for one reader, without a node stream:
 * a small repo's CAR is one or two chunks, and a Readable's machinery (its buffer list, events
 * and ticks per chunk) cost more than the chunks. The socket is paused while more than
 * `HIGH_WATER` bytes wait unread, and resumed as they are read.
 */

/** Bytes buffered unread before the socket is paused. */
const HIGH_WATER = 64 * 1024;

export class WireBody implements AsyncIterable<Uint8Array> {
  #chunks: Uint8Array[] = [];
  #head = 0;
  #buffered = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #paused = false;
  readonly #flow: { pause(): void; resume(): void };

  /** `flow` pauses and resumes the source (the socket). */
  constructor(flow: { pause(): void; resume(): void }) {
    this.#flow = flow;
  }

  /** True once failed, or ended and read to the end. */
  get destroyed(): boolean {
    return this.#error !== undefined || (this.#ended && this.#head === this.#chunks.length);
  }

  /** A chunk from the source. */
  push(chunk: Uint8Array): void {
    if (this.#ended || this.#error) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    if (this.#buffered > HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#flow.pause();
    }
    this.#notify();
  }

  /** The source is complete. */
  end(): void {
    if (this.#error) return;
    this.#ended = true;
    this.#notify();
  }

  /** Fails the body: what is buffered is dropped, and the reader gets `err` next. No-op once read to the end. */
  destroy(err: Error): void {
    if (this.#error || (this.#ended && this.#head === this.#chunks.length)) return;
    this.#error = err;
    this.#chunks = [];
    this.#head = 0;
    this.#buffered = 0;
    this.#notify();
  }

  /**
   * The next chunk; null at the end; undefined when none has come yet (then `wait`).
   * @throws the error the body failed with
   */
  read(): Uint8Array | null | undefined {
    if (this.#error) throw this.#error;
    if (this.#head < this.#chunks.length) {
      const chunk = this.#chunks[this.#head]!;
      this.#chunks[this.#head++] = undefined as unknown as Uint8Array;
      if (this.#head === this.#chunks.length) {
        this.#chunks.length = 0;
        this.#head = 0;
      }
      this.#buffered -= chunk.byteLength;
      if (this.#paused && this.#buffered <= HIGH_WATER / 2) {
        this.#paused = false;
        this.#flow.resume();
      }
      return chunk;
    }
    return this.#ended ? null : undefined;
  }

  /** Resolves when there is something new to read (a chunk, the end, an error). One waiter at a time. */
  wait(): Promise<void> {
    if (this.#error || this.#ended || this.#head < this.#chunks.length) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      const chunk = this.read();
      if (chunk === null) return;
      if (chunk === undefined) await this.wait();
      else yield chunk;
    }
  }

  #notify(): void {
    const wake = this.#wake;
    if (wake) {
      this.#wake = undefined;
      wake();
    }
  }
}
