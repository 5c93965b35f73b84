/**
 * The check that a CAR block's bytes hash to its CID: at once (`checkBlockHash`, what the CAR
 * reader does by default), or later (`DeferredBlockHashes`), for an importer that starts its
 * database work while the hashes are still being checked and waits for them before it commits.
 *
 * Hashing every block is a third of verifying a large repo (a SHA-256 call per block; for
 * 100,000 records about 150 ms), and while it runs the database has nothing to do. Deferred, the
 * hashes are checked in slices between the importer's other work: while the process waits for
 * PostgreSQL, its own thread would otherwise sit idle.
 *
 * Either way, the first block in CAR order whose bytes do not match its CID is the one refused.
 */
import { hash } from 'node:crypto';
import { CID_LENGTH, cidToString } from './cid.ts';
import { BlockHashMismatchError } from './errors.ts';

/**
 * Checks the block whose 36-byte CID starts at `start` in `buf` and whose data follows it up to
 * `end`.
 *
 * @throws BlockHashMismatchError the data does not hash to the CID's digest
 */
export function checkBlockHash(buf: Uint8Array, start: number, end: number): void {
  // The digest as a one-byte string ('binary' is latin1): about twice as fast as a Buffer for
  // small blocks, which are most of them, and a Buffer per block was most of verify's garbage.
  const digest = hash('sha256', buf.subarray(start + CID_LENGTH, end), 'binary');
  for (let i = 0; i < 32; i++) {
    if (digest.charCodeAt(i) !== buf[start + 4 + i]) throw new BlockHashMismatchError(cidToString(buf, start));
  }
}

/** How long one background slice hashes before it lets the event loop run. */
const SLICE_MS = 4;

/**
 * Blocks whose hashes are still to be checked, in the order they were read. Holds the buffers
 * they are in (which the block map holds anyway) and three integers per block.
 */
export class DeferredBlockHashes {
  readonly #buffers: Uint8Array[] = [];
  #buffer = new Int32Array(1024);
  #start = new Uint32Array(1024);
  #end = new Uint32Array(1024);
  #n = 0;
  #next = 0;
  #failure: BlockHashMismatchError | undefined;
  #background: Promise<void> | undefined;

  /** Records the block at `[start, end)` of `buf` (CID first), to be checked later. */
  add(buf: Uint8Array, start: number, end: number): void {
    const buffers = this.#buffers;
    if (buffers[buffers.length - 1] !== buf) buffers.push(buf);
    const i = this.#n;
    if (i === this.#start.length) this.#grow();
    this.#buffer[i] = buffers.length - 1;
    this.#start[i] = start;
    this.#end[i] = end;
    this.#n = i + 1;
  }

  /** Blocks recorded and not yet checked. */
  get unchecked(): number {
    return this.#n - this.#next;
  }

  /**
   * Checks, now, every block recorded so far that is not checked yet.
   *
   * @throws BlockHashMismatchError naming the first block, in CAR order, that does not match
   */
  checkNow(): void {
    this.#checkUntil(Infinity);
  }

  /**
   * Checks the blocks recorded so far in slices of a few milliseconds, each followed by a turn of
   * the event loop, so that I/O callbacks (a database's answers) wait at most a slice. Resolves
   * once every block is checked; rejects with the first mismatch, as `checkNow` throws it. The
   * same promise on every call; `checkNow` may finish the work at any time.
   */
  inBackground(): Promise<void> {
    this.#background ??= new Promise<void>((resolve, reject) => {
      const slice = () => {
        try {
          if (this.#checkUntil(performance.now() + SLICE_MS)) resolve();
          else setImmediate(slice);
        } catch (err) {
          reject(err);
        }
      };
      setImmediate(slice);
    });
    return this.#background;
  }

  /** Checks blocks until all are checked (true) or `deadline` (a `performance.now()` time) passes. */
  #checkUntil(deadline: number): boolean {
    if (this.#failure) throw this.#failure;
    const buffers = this.#buffers;
    while (this.#next < this.#n) {
      // The clock is read every 64 blocks or 256 KB, whichever comes first (blocks may be large).
      let i = this.#next;
      for (let bytes = 0, k = 0; i < this.#n && k < 64 && bytes < 256 * 1024; i++, k++) {
        try {
          checkBlockHash(buffers[this.#buffer[i]!]!, this.#start[i]!, this.#end[i]!);
        } catch (err) {
          this.#failure = err as BlockHashMismatchError;
          this.#next = i;
          throw err;
        }
        bytes += this.#end[i]! - this.#start[i]!;
      }
      this.#next = i;
      if (deadline !== Infinity && performance.now() >= deadline) return this.#next === this.#n;
    }
    // Everything checked: the positions are not needed any more (the buffers are the blocks').
    this.#buffer = new Int32Array(0);
    this.#start = this.#end = new Uint32Array(0);
    this.#buffers.length = 0;
    this.#n = this.#next = 0;
    return true;
  }

  #grow(): void {
    const n = Math.max(1024, this.#start.length * 2);
    const buffer = new Int32Array(n);
    buffer.set(this.#buffer);
    const start = new Uint32Array(n);
    start.set(this.#start);
    const end = new Uint32Array(n);
    end.set(this.#end);
    this.#buffer = buffer;
    this.#start = start;
    this.#end = end;
  }
}
