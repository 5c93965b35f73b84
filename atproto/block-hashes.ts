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
import type { BlockMap } from './block-map.ts';
import { CID_LENGTH, cidToString } from './cid.ts';
import { BlockHashMismatchError } from './errors.ts';
import { release, resized } from './typed-arrays.ts';

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
 * Blocks whose hashes are still to be checked, in the order they were read: the blocks a
 * `BlockMap` took (`held`: read from there, so nothing is stored for them, where three integers
 * a block were as much again as the map's own index), and any others (`add`: a duplicate CID the
 * map kept its first copy of), each with its place among them.
 */
export class DeferredBlockHashes {
  // Blocks of the map, by index: [0, #held) recorded, [0, #nextHeld) checked.
  #map: BlockMap | undefined;
  #held = 0;
  #nextHeld = 0;
  // Other blocks: where they lie, and how many of the map's blocks came before each.
  readonly #buffers: Uint8Array[] = [];
  #buffer = new Int32Array(0);
  #start = new Uint32Array(0);
  #end = new Uint32Array(0);
  #at = new Uint32Array(0);
  #n = 0;
  #next = 0;
  #failure: BlockHashMismatchError | undefined;
  #background: Promise<void> | undefined;

  /** Records the block that `map` just took (its last), to be checked later, where it lies in the map. */
  held(map: BlockMap): void {
    if (this.#map !== undefined && this.#map !== map) throw new Error('DeferredBlockHashes: blocks of another map');
    this.#map = map;
    if (map.size !== this.#held + 1) throw new Error('DeferredBlockHashes: a block of the map was not recorded');
    this.#held++;
  }

  /** Records the block at `[start, end)` of `buf` (CID first), to be checked later. */
  add(buf: Uint8Array, start: number, end: number): void {
    const buffers = this.#buffers;
    if (buffers[buffers.length - 1] !== buf) buffers.push(buf);
    const i = this.#n;
    if (i === this.#start.length) this.#grow();
    this.#buffer[i] = buffers.length - 1;
    this.#start[i] = start;
    this.#end[i] = end;
    this.#at[i] = this.#held;
    this.#n = i + 1;
  }

  /** Blocks recorded and not yet checked. */
  get unchecked(): number {
    return this.#n - this.#next + this.#held - this.#nextHeld;
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
    const map = this.#map;
    while (this.#next < this.#n || this.#nextHeld < this.#held) {
      // The clock is read every 64 blocks or 256 KB, whichever comes first (blocks may be large).
      for (let bytes = 0, k = 0; k < 64 && bytes < 256 * 1024; k++) {
        // The next in CAR order: another block read before the map's next one, or that one.
        const other = this.#next < this.#n && this.#at[this.#next]! <= this.#nextHeld;
        if (!other && this.#nextHeld === this.#held) break;
        let buf: Uint8Array;
        let start: number;
        let end: number;
        if (other) {
          const i = this.#next;
          buf = buffers[this.#buffer[i]!]!;
          start = this.#start[i]!;
          end = this.#end[i]!;
        } else {
          const i = this.#nextHeld;
          buf = map!.bufferAt(i);
          start = map!.startAt(i);
          end = map!.endAt(i);
        }
        try {
          checkBlockHash(buf, start, end);
        } catch (err) {
          this.#failure = err as BlockHashMismatchError;
          throw err;
        }
        if (other) this.#next++;
        else this.#nextHeld++;
        bytes += end - start;
      }
      if (deadline !== Infinity && performance.now() >= deadline) return this.unchecked === 0;
    }
    // Everything checked: the positions are not needed any more (the buffers are the blocks').
    for (const positions of [this.#buffer, this.#start, this.#end, this.#at]) release(positions);
    this.#buffer = new Int32Array(0);
    this.#start = new Uint32Array(0);
    this.#end = new Uint32Array(0);
    this.#at = new Uint32Array(0);
    this.#buffers.length = 0;
    this.#n = this.#next = 0;
    this.#map = undefined;
    this.#held = this.#nextHeld = 0;
    return true;
  }

  #grow(): void {
    const n = Math.max(64, this.#start.length * 2);
    this.#buffer = resized(this.#buffer, n);
    this.#start = resized(this.#start, n);
    this.#end = resized(this.#end, n);
    this.#at = resized(this.#at, n);
  }
}
