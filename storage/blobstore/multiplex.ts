/**
 * A blobstore over N components (buckets, regions, directories) that keeps a copy on each.
 *
 * - put writes to every component at once and succeeds when at least `writeQuorum` did; each
 *   component that failed is recorded in the heal queue as a missed write. Fewer than the quorum
 *   is a QuorumError naming each failed component.
 * - get reads components in order and returns the first copy whose bytes match the key
 *   (`verifyContent`), so a missing or corrupt copy costs one more read, never a wrong answer.
 *   Components it found missing or corrupt on the way are recorded in the heal queue; components
 *   after the one that answered are not read (scrub finds those).
 * - A component that throws is skipped as long as another answers; its error is part of the
 *   NoVerifiedCopyError when none does. It is not a heal entry: unreachable is not missing.
 * - Listing, deletion and the per-component views the scrub walker needs are below.
 */
import type { BlobStore, ByteSource, HealEntry, HealQueue, ListOptions, ListPage } from './types.ts';
import { NoVerifiedCopyError, QuorumError, RangeNotSatisfiableError, StorageError } from '../errors.ts';
import { validateKey, validatePrefix, verifyContent } from '../keys.ts';
import type { ContentCheck } from '../keys.ts';
import { bodySize, checkLimit, checkRangeArgs, DEFAULT_LIST_LIMIT } from './checks.ts';

export interface MultiplexOptions {
  components: BlobStore[];
  /** How many components a put must reach, 1 to components.length. */
  writeQuorum: number;
  healQueue?: HealQueue;
  /** Checks a copy against its key; default `verifyContent`. */
  verify?: (key: string, bytes: Uint8Array) => ContentCheck | Promise<ContentCheck>;
}

export interface ComponentPresence {
  component: string;
  present: boolean;
  size?: number;
  /** Set when the component could not be asked; `present` is then false. */
  error?: string;
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export class MultiplexBlobStore implements BlobStore {
  readonly name: string;
  readonly components: readonly BlobStore[];
  readonly writeQuorum: number;
  readonly #heal: HealQueue | undefined;
  readonly #verify: NonNullable<MultiplexOptions['verify']>;

  /**
   * @throws {RangeError} when there are no components or the quorum is out of range.
   * @throws {StorageError} when two components share a name (heal entries name components).
   */
  constructor(opts: MultiplexOptions) {
    const { components, writeQuorum } = opts;
    if (components.length === 0) throw new RangeError('a multiplexed blobstore needs at least one component');
    if (!Number.isInteger(writeQuorum) || writeQuorum < 1 || writeQuorum > components.length) {
      throw new RangeError(`write quorum ${writeQuorum} is not between 1 and ${components.length}`);
    }
    const names = components.map((c) => c.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) throw new StorageError(`two components are named ${dup}; give them distinct names`);
    this.components = [...components];
    this.writeQuorum = writeQuorum;
    this.name = `multiplex:[${names.join(',')}]`;
    this.#heal = opts.healQueue;
    this.#verify = opts.verify ?? verifyContent;
  }

  /**
   * @throws {QuorumError} when fewer than `writeQuorum` components took the write.
   * @throws whatever the heal queue throws when recording a missed write: the put is then
   *   retried (puts are idempotent) rather than leaving a miss that nobody knows about.
   */
  async put(key: string, body: Uint8Array | ByteSource): Promise<void> {
    validateKey(key);
    bodySize(body);
    // Each component reads a source itself, a chunk at a time: no component's copy is held whole.
    const results = await Promise.allSettled(this.components.map((c) => c.put(key, body)));
    const failures = results.flatMap((r, i) =>
      r.status === 'rejected' ? [{ component: this.components[i]!.name, error: message(r.reason) }] : [],
    );
    const written = results.length - failures.length;
    if (written < this.writeQuorum) throw new QuorumError(key, written, this.writeQuorum, failures);
    for (const f of failures) await this.#heal?.record({ key, component: f.component, reason: 'missed-write', detail: f.error });
  }

  /**
   * The first copy that verifies, or `null` when every component answered that the key is
   * absent. Keys that carry no hash (`verifyContent` says unchecked) return the first copy.
   * @throws {NoVerifiedCopyError} when some copy exists or some component failed, and none verified.
   */
  async get(key: string): Promise<Uint8Array | null> {
    validateKey(key);
    const report: { component: string; state: string }[] = [];
    const heal: HealEntry[] = [];
    let found: Uint8Array | null = null;
    for (const c of this.components) {
      let bytes: Uint8Array | null;
      try {
        bytes = await c.get(key);
      } catch (err) {
        report.push({ component: c.name, state: `error: ${message(err)}` });
        continue;
      }
      if (bytes === null) {
        report.push({ component: c.name, state: 'missing' });
        heal.push({ key, component: c.name, reason: 'missing' });
        continue;
      }
      const check = await this.#verify(key, bytes);
      if (!check.ok) {
        report.push({ component: c.name, state: `corrupt: ${check.reason}` });
        heal.push({ key, component: c.name, reason: 'corrupt', detail: check.reason });
        continue;
      }
      found = bytes;
      break;
    }
    // Heal entries only make sense for a key that exists somewhere.
    const sawCopy = found !== null || heal.some((h) => h.reason === 'corrupt');
    if (sawCopy) await this.recordQuietly(heal);
    if (found !== null) return found;
    if (report.every((r) => r.state === 'missing')) return null;
    throw new NoVerifiedCopyError(key, report);
  }

  /**
   * The range from the first component that holds the key. A range cannot be checked against a
   * whole-object hash, so this read is NOT verified; callers that need verified bytes use `get`
   * (or verify what they read, e.g. block CIDs inside a pack). A component whose copy is too
   * short is passed over in case it is a truncated copy.
   * @throws {RangeNotSatisfiableError} when no copy is long enough.
   * @throws {NoVerifiedCopyError} when no component answered and some failed.
   */
  async getRange(key: string, offset: number, length: number): Promise<Uint8Array | null> {
    validateKey(key);
    checkRangeArgs(offset, length);
    const report: { component: string; state: string }[] = [];
    let pastEnd: RangeNotSatisfiableError | undefined;
    for (const c of this.components) {
      try {
        const bytes = await c.getRange(key, offset, length);
        if (bytes !== null) return bytes;
        report.push({ component: c.name, state: 'missing' });
      } catch (err) {
        if (err instanceof RangeNotSatisfiableError) pastEnd ??= err;
        report.push({ component: c.name, state: `error: ${message(err)}` });
      }
    }
    if (pastEnd) throw pastEnd;
    if (report.every((r) => r.state === 'missing')) return null;
    throw new NoVerifiedCopyError(key, report);
  }

  /** {@link getRange} into the caller's buffer: the first component that holds the key fills it. */
  async readInto(key: string, offset: number, target: Uint8Array): Promise<boolean> {
    validateKey(key);
    checkRangeArgs(offset, target.length);
    const report: { component: string; state: string }[] = [];
    let pastEnd: RangeNotSatisfiableError | undefined;
    for (const c of this.components) {
      try {
        if (await c.readInto(key, offset, target)) return true;
        report.push({ component: c.name, state: 'missing' });
      } catch (err) {
        if (err instanceof RangeNotSatisfiableError) pastEnd ??= err;
        report.push({ component: c.name, state: `error: ${message(err)}` });
      }
    }
    if (pastEnd) throw pastEnd;
    if (report.every((r) => r.state === 'missing')) return false;
    throw new NoVerifiedCopyError(key, report);
  }

  /** Whether any component holds the key; components that fail are skipped while another answers. */
  async has(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  /** The size of the first copy found; components that fail are skipped while another answers. */
  async stat(key: string): Promise<{ size: number } | null> {
    validateKey(key);
    const errors: { component: string; state: string }[] = [];
    for (const c of this.components) {
      try {
        const st = await c.stat(key);
        if (st) return st;
      } catch (err) {
        errors.push({ component: c.name, state: `error: ${message(err)}` });
      }
    }
    if (errors.length === this.components.length) {
      throw new StorageError(`${this.name} stat ${key}: no component answered: ` + errors.map((e) => `${e.component} ${e.state}`).join(', '));
    }
    return null;
  }

  /**
   * Deletes from every component.
   * @throws {StorageError} naming the components that failed (after trying all of them).
   */
  async delete(key: string): Promise<void> {
    validateKey(key);
    const results = await Promise.allSettled(this.components.map((c) => c.delete(key)));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [`${this.components[i]!.name}: ${message(r.reason)}`] : []));
    if (failed.length > 0) throw new StorageError(`${this.name} delete ${key} failed on ${failed.join('; ')}`);
  }

  /**
   * The union of every component's keys, sorted and without duplicates. The cursor is the last
   * key returned; each component is asked for the keys after it, which every implementation in
   * this folder supports (their cursors are last keys too).
   * @throws {StorageError} when any component fails: a listing that silently lacked one
   *   component's keys would mislead GC and scrub.
   */
  async list(prefix: string, opts: ListOptions = {}): Promise<ListPage> {
    validatePrefix(prefix);
    const limit = checkLimit(opts.limit ?? DEFAULT_LIST_LIMIT);
    const pages = await Promise.all(
      this.components.map((c) =>
        c.list(prefix, { ...opts, limit }).catch((err: unknown) => {
          throw new StorageError(`${this.name} list ${prefix}: ${c.name}: ${message(err)}`);
        }),
      ),
    );
    // The first `limit` keys of the union are each among the first `limit` of their component.
    const merged = [...new Set(pages.flatMap((p) => p.keys))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const more = merged.length > limit || pages.some((p) => p.cursor !== undefined);
    const keys = merged.slice(0, limit);
    const last = keys[keys.length - 1];
    return more && last !== undefined ? { keys, cursor: last } : { keys };
  }

  /** Asks every component at once whether it holds the key, for scrub. Never throws for a component. */
  async hasPerComponent(key: string): Promise<ComponentPresence[]> {
    validateKey(key);
    return Promise.all(
      this.components.map(async (c): Promise<ComponentPresence> => {
        try {
          const st = await c.stat(key);
          return st ? { component: c.name, present: true, size: st.size } : { component: c.name, present: false };
        } catch (err) {
          return { component: c.name, present: false, error: message(err) };
        }
      }),
    );
  }

  /** One component's raw copy, not verified (scrub compares and verifies copies itself). */
  async getFromComponent(name: string, key: string): Promise<Uint8Array | null> {
    return this.component(name).get(key);
  }

  /** @throws {StorageError} when no component has this name. */
  component(name: string): BlobStore {
    const c = this.components.find((x) => x.name === name);
    if (!c) throw new StorageError(`${this.name} has no component ${name}`);
    return c;
  }

  /** Reads report what they saw on a best-effort basis: a heal queue that is down must not fail a read that succeeded, and scrub finds the same damage again. */
  private async recordQuietly(entries: HealEntry[]): Promise<void> {
    if (!this.#heal) return;
    for (const e of entries) await this.#heal.record(e).catch(() => {});
  }
}
