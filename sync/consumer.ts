/**
 * Follows one upstream's `subscribeRepos` and applies it through the shared store path, in
 * batches: the frames read since the last batch are decoded and verified, then stored as one
 * batch (one pack, one transaction) together with the cursor — the highest seq of the batch, or,
 * while commits wait for a resync, just before the earliest of them — so a crash resumes right
 * after the last applied frame, with nothing lost or applied twice. Within a batch, one repo's
 * changes keep their order and different repos land together.
 *
 * Every frame ends in a named outcome: applied, a replay skipped, a gap (the repo goes to resync
 * and its later commits wait for it), or an error kept as data with its seq (`sync_frame_errors`);
 * none stops the subscription. The connection is re-opened with backoff from the stored cursor.
 */
import type pg from 'pg';
import { SignatureError } from '../atproto/errors.ts';
import { NetError, type AtprotoIdentity } from '../atproto/net/index.ts';
import type { ChangeOutcome, CommitChange, RepoChange } from '../ingest/changes.ts';
import { storeBatch, type StoreDeps } from '../ingest/store.ts';
import type { FilterOptions } from '../backfill/filters.ts';
import { recordFilter } from '../backfill/import.ts';
import { CommitVerifyError, FrameError } from './errors.ts';
import { decodeFrame, type Frame } from './frames.ts';
import { bump, newProgress, type SyncProgress } from './progress.ts';
import { openFrames, subscribeUrl } from './socket.ts';
import type { CommitFrame } from './verify-commit.ts';
import { inlineVerifier, VerifyPool, type CommitVerifier } from './verify-pool.ts';
import { secp256k1Backend } from '../atproto/signature.ts';

export interface SubscriptionOptions {
  /** Upstream origin (a relay or a PDS): http(s) or ws(s). */
  host: string;
  stores: StoreDeps;
  filter: FilterOptions;
  ephemeralRetentionSeconds?: number | undefined;
  /** When a repo an `#account` frame marks gone is due for the gone re-check. */
  goneRecheckSeconds?: number | undefined;
  /** The DID's identity; `fresh` bypasses any cache (after a bad signature, on `#identity`). */
  resolve: (did: string, fresh: boolean) => Promise<AtprotoIdentity>;
  /** Sends a repo to backfill's resync (idempotent: a resync already running is left alone). */
  requestResync: (did: string, reason: string) => Promise<void>;
  maxBatch?: number;
  /** A batch's frames' bytes (past its first frame); with the connection's queue this bounds what is in flight. */
  maxBatchBytes?: number;
  /** The connection's queue of frames read and not yet taken, in bytes (sync/socket.ts). */
  queueBytes?: number;
  batchWaitMs?: number;
  /** Threads that check commits (sync/verify-pool.ts); 0 checks them on this thread. */
  verifyThreads?: number;
  /** Stop (returning) after this long; the caller starts again (continue-as-new). */
  runForMs?: number;
  signal: AbortSignal;
  onProgress?: (p: SyncProgress) => void;
  log?: (line: string) => void;
}

export const cursorKey = (host: string) => `sync/cursor/${new URL(host).host}`;

export async function readCursor(pool: pg.Pool, host: string): Promise<number | undefined> {
  const { rows } = await pool.query<{ value: { seq?: number } }>('SELECT value FROM job_state WHERE key = $1', [cursorKey(host)]);
  const seq = rows[0]?.value.seq;
  return typeof seq === 'number' ? seq : undefined;
}

/**
 * Commits buffered per repo while its resync runs, and since when. They are held in this run's
 * memory only; the committed cursor stays before the earliest of them (`committedCursor`), so
 * that after a crash the upstream sends them again.
 */
interface Waiting {
  since: number;
  changes: CommitChange[];
}
const MAX_WAITING_PER_REPO = 1000;
/** A batch under a backlog takes up to this many times `maxBatch` frames. */
const BACKLOG_BATCHES = 4;
/**
 * In flight at once: the connection's queue (QUEUE_HIGH_WATER_BYTES), the batch being checked and
 * the one being stored (MAX_BATCH_BYTES each): about 64 MiB of frames however large they are (a frame may be
 * 5 MiB), and at most QUEUE_HIGH_WATER + 2 × BACKLOG_BATCHES × maxBatch frames.
 */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;
const WAIT_GIVE_UP_MS = 15 * 60_000;

/** `start()` for `key`, or the call of it still in flight: callers at once share one. */
function once<T>(inFlight: Map<string, Promise<T>>, key: string, start: () => Promise<T>): Promise<T> {
  let pending = inFlight.get(key);
  if (!pending) {
    pending = start().finally(() => inFlight.delete(key));
    inFlight.set(key, pending);
  }
  return pending;
}

export async function runSubscription(opts: SubscriptionOptions): Promise<SyncProgress> {
  const { pool } = opts.stores;
  const progress = newProgress(opts.host, await readCursor(pool, opts.host));
  const log = opts.log ?? (() => {});
  const until = opts.runForMs === undefined ? Infinity : Date.now() + opts.runForMs;
  const filter = recordFilter(opts.filter);
  const waiting = new Map<string, Waiting>();
  /** The frame seq of each verified commit, for the cursor a restart resumes from. */
  const seqOf = new WeakMap<CommitChange, number>();
  const keys = new Map<string, string>();
  let backoffMs = 500;
  let windowStart = Date.now();
  let windowCount = 0;
  const verifier: CommitVerifier = (opts.verifyThreads ?? 0) > 0 ? new VerifyPool(opts.verifyThreads!) : inlineVerifier;

  /** The key to check `did`'s commits with: remembered, on the repo row, or resolved (then also returned as the identity). */
  const keyFor = (did: string): Promise<{ key: string; id?: AtprotoIdentity }> => {
    const known = keys.get(did);
    if (known !== undefined) return Promise.resolve({ key: known });
    // One lookup per DID however many of its commits a batch holds.
    return once(lookups, did, () => lookUpKey(did));
  };
  const lookups = new Map<string, Promise<{ key: string; id?: AtprotoIdentity }>>();
  const freshLookups = new Map<string, Promise<AtprotoIdentity | undefined>>();
  const lookUpKey = async (did: string): Promise<{ key: string; id?: AtprotoIdentity }> => {
    let key = keys.get(did);
    if (key === undefined) {
      const { rows } = await pool.query<{ signing_key: string | null }>('SELECT signing_key FROM repos WHERE did = $1', [did]);
      key = rows[0]?.signing_key ?? undefined;
    }
    let id: AtprotoIdentity | undefined;
    if (key === undefined) key = (id = await opts.resolve(did, false)).signingKey;
    if (keys.size > 100_000) keys.clear();
    keys.set(did, key);
    return { key, id };
  };

  try {
    await follow();
  } finally {
    await verifier.close();
  }
  return progress;

  function applied(frames: number): void {
    windowCount += frames;
    const now = Date.now();
    if (now - windowStart >= 1000) {
      progress.eventsPerSecond = Math.round((windowCount * 1000) / (now - windowStart));
      windowStart = now;
      windowCount = 0;
    }
    opts.onProgress?.(progress);
  }

  async function follow(): Promise<void> {
    while (!opts.signal.aborted && Date.now() < until) {
      let queue;
      try {
        queue = await openFrames(subscribeUrl(opts.host, progress.cursor), { signal: opts.signal, highWaterBytes: opts.queueBytes });
      } catch (err) {
        progress.lastError = `connect: ${(err as Error).message}`;
        progress.reconnects++;
        await sleep(backoffMs, opts.signal);
        backoffMs = Math.min(backoffMs * 2, 30_000);
        continue;
      }
      progress.connected = true;
      log(`sync ${opts.host}: connected from cursor ${progress.cursor ?? '(live)'} (commits checked on ${opts.verifyThreads ?? 0} threads, secp256k1 by ${secp256k1Backend})`);
      // One batch is stored while the next is read and checked: at most two in hand, stored in order.
      let storing: Promise<void> | undefined;
      try {
        while (!opts.signal.aborted && Date.now() < until) {
          // Under a backlog, bigger batches: a transaction's fixed cost (a dozen statements, a
          // pack) spread over more frames, which PostgreSQL answers for less CPU per frame.
          const maxBatch = opts.maxBatch ?? 500;
          const raw = await queue.take(queue.pending >= 2 * maxBatch ? BACKLOG_BATCHES * maxBatch : maxBatch, opts.batchWaitMs ?? 200, opts.maxBatchBytes ?? MAX_BATCH_BYTES);
          if (raw.length === 0) {
            await storing;
            storing = undefined;
            if (queue.closed !== undefined) break;
            opts.onProgress?.(progress);
            continue;
          }
          backoffMs = 500;
          const batch = prepareFrames(raw);
          const before = storing;
          storing = (async () => {
            await before;
            await applyFrames(batch);
            applied(raw.length);
          })();
          await before;
        }
        await storing;
      } finally {
        queue.close();
        progress.connected = false;
        // A batch left behind by an error or a stop is not stored; the cursor has not passed it.
        storing?.catch(() => {});
      }
      if (opts.signal.aborted || Date.now() >= until) break;
      const why = queue.closed;
      progress.lastError = why instanceof Error ? why.message : 'upstream closed the stream';
      progress.reconnects++;
      log(`sync ${opts.host}: ${progress.lastError}; reconnecting in ${backoffMs} ms`);
      await sleep(backoffMs, opts.signal);
      backoffMs = Math.min(backoffMs * 2, 30_000);
    }
  }

  /** A batch read: its frames decoded and its commits' checks started. */
  interface Prepared {
    raw: Uint8Array[];
    decoded: { bytes: Uint8Array; frame?: Frame; err?: FrameError }[];
    checks: Map<Frame, Promise<CommitChange>>;
  }

  /**
   * Decodes a batch and starts checking every commit in it at once (on the verify threads, when
   * there are some); `applyFrames` takes the results in frame order.
   */
  function prepareFrames(raw: Uint8Array[]): Prepared {
    const decoded = raw.map((bytes) => {
      try {
        return { bytes, frame: decodeFrame(bytes) };
      } catch (err) {
        if (!(err instanceof FrameError)) throw err;
        return { bytes, err };
      }
    });
    const checks = new Map<Frame, Promise<CommitChange>>();
    for (const { frame } of decoded) {
      if (frame?.t !== '#commit') continue;
      const check = verifiedCommit(frame);
      check.catch(() => {}); // awaited in order by applyFrames; until then not unhandled
      checks.set(frame, check);
    }
    return { raw, decoded, checks };
  }

  /** Stores one prepared batch, in frame order; the cursor moves to its last seq. */
  async function applyFrames({ decoded, checks }: Prepared): Promise<void> {
    const changes: RepoChange[] = [];
    const errors: { seq: number | null; problem: string; detail: string; frame: Uint8Array | null }[] = [];
    const resync = new Map<string, string>();
    let lastSeq = progress.cursor;
    let lastTime: string | undefined;
    const fromWaiting = new Set<CommitChange>();
    const syncs: Extract<Frame, { t: '#sync' }>[] = [];
    // Buffered commits go first, ahead of their repos' new ones.
    for (const [did, w] of waiting) {
      if (Date.now() - w.since > WAIT_GIVE_UP_MS) {
        waiting.delete(did);
        resync.set(did, 'commits waited too long for a resync; resync again');
        continue;
      }
      for (const c of w.changes) {
        changes.push(c);
        fromWaiting.add(c);
      }
    }
    for (const d of decoded) {
      if (d.err) {
        const err = d.err;
        bump(progress.frames, err.problem === 'frame-unknown-type' ? 'unknown' : 'malformed');
        errors.push({ seq: err.seq ?? null, problem: err.problem, detail: err.message, frame: d.bytes.subarray(0, 64 * 1024) });
        if (err.seq !== undefined) lastSeq = Math.max(lastSeq ?? 0, err.seq);
        continue;
      }
      const frame = d.frame!;
      bump(progress.frames, frame.t);
      if (frame.t === 'error') {
        errors.push({ seq: null, problem: 'error-frame', detail: `${frame.error}: ${frame.message ?? ''}`, frame: null });
        continue;
      }
      if (frame.t === '#info') {
        if (frame.name === 'OutdatedCursor') progress.outdatedCursor++;
        errors.push({ seq: null, problem: `info:${frame.name}`, detail: frame.message ?? '', frame: null });
        continue;
      }
      lastSeq = Math.max(lastSeq ?? 0, frame.seq);
      lastTime = frame.time;
      switch (frame.t) {
        case '#commit': {
          const w = waiting.get(frame.repo);
          try {
            const change = await checks.get(frame)!;
            seqOf.set(change, frame.seq);
            if (w) {
              if (w.changes.length < MAX_WAITING_PER_REPO) w.changes.push(change);
            } else changes.push(change);
          } catch (err) {
            const problem =
              err instanceof CommitVerifyError ? err.problem : err instanceof SignatureError ? 'bad-signature' : err instanceof NetError ? 'identity-unresolved' : undefined;
            if (problem === undefined) throw err;
            errors.push({ seq: frame.seq, problem, detail: (err as Error).message, frame: null });
            resync.set(frame.repo, `${problem}: ${(err as Error).message}`);
          }
          break;
        }
        case '#sync':
          // Compared with the state after this batch: the commits before it may bring the repo there.
          syncs.push(frame);
          break;
        case '#identity': {
          keys.delete(frame.did);
          try {
            const id = await opts.resolve(frame.did, true);
            keys.set(frame.did, id.signingKey);
            changes.push({ kind: 'identity', did: frame.did, handle: id.handle ?? frame.handle, pds: id.pds, signingKey: id.signingKey });
          } catch (err) {
            changes.push({ kind: 'identity', did: frame.did, handle: frame.handle, pds: undefined, signingKey: undefined });
            errors.push({ seq: frame.seq, problem: 'identity-unresolved', detail: (err as Error).message, frame: null });
          }
          break;
        }
        case '#account':
          changes.push({ kind: 'account', did: frame.did, active: frame.active, status: frame.status });
          break;
      }
    }
    const result = await storeBatch(opts.stores, changes, {
      filter,
      ephemeralRetentionSeconds: opts.ephemeralRetentionSeconds,
      goneRecheckSeconds: opts.goneRecheckSeconds,
      origin: 'live',
      cursor: lastSeq === undefined ? undefined : { key: cursorKey(opts.host), valueAfter: (outcomes) => committedCursor(lastSeq!, lastTime, changes, outcomes) },
      alsoInTransaction: errors.length === 0 ? undefined : async (tx) => {
        for (const e of errors) {
          await tx.query('INSERT INTO sync_frame_errors (host, seq, problem, detail, frame) VALUES ($1, $2, $3, $4, $5)', [new URL(opts.host).host, e.seq, e.problem, e.detail.slice(0, 2000), e.frame]);
        }
      },
    });
    progress.errors += errors.length;
    result.outcomes.forEach((o, i) => {
      const change = changes[i]!;
      const buffered = fromWaiting.has(change as CommitChange);
      if (!(buffered && o.kind === 'gap')) bump(progress.outcomes, o.kind);
      if (o.kind === 'gap' && change.kind === 'commit') {
        // It and its repo's later commits wait for the resync; the first gap asks for it.
        let w = waiting.get(o.did);
        if (!w) {
          waiting.set(o.did, (w = { since: Date.now(), changes: [] }));
          resync.set(o.did, o.reason);
        }
        if (!buffered && w.changes.length < MAX_WAITING_PER_REPO) w.changes.push(change);
      } else if (buffered) {
        const w = waiting.get(o.did);
        if (w) w.changes = w.changes.filter((c) => c !== change);
      }
      if (o.kind === 'account' && o.needsBackfill) resync.set(o.did, 'account active again, repo not held');
    });
    for (const frame of syncs) {
      const { rows } = await pool.query<{ rev: string | null }>('SELECT rev FROM repos WHERE did = $1', [frame.did]);
      const stored = rows[0]?.rev ?? null;
      if (stored === null || frame.rev > stored) resync.set(frame.did, `#sync at rev ${frame.rev} (stored ${stored ?? 'none'})`);
      else bump(progress.outcomes, 'skipped');
    }
    for (const [did, w] of waiting) if (w.changes.length === 0 && !resync.has(did)) waiting.delete(did);
    progress.waitingRepos = waiting.size;
    progress.cursor = lastSeq;
    if (lastTime) progress.lagMs = Math.max(0, Date.now() - Date.parse(lastTime));
    for (const [did, reason] of resync) {
      progress.resyncs++;
      await opts.requestResync(did, reason);
    }
  }

  /**
   * The cursor committed with a batch: its last seq, unless a commit waits for a resync after it
   * (buffered before, buffered by this batch, or a gap of this batch), then just before the
   * earliest such commit. A restart then replays from there: the waiting commits come again, and
   * every other frame after the cursor is at or below its repo's stored rev (a replay, skipped)
   * or an account or identity change that is recorded only when it changes something. So a crash
   * loses no buffered commit, at the cost of re-reading at most the frames since the oldest one
   * (a buffer is given up after WAIT_GIVE_UP_MS). `progress.cursor`, which reconnects use within
   * a run, is the last seq read: the buffer is still in memory then.
   */
  function committedCursor(lastSeq: number, time: string | undefined, changes: RepoChange[], outcomes: ChangeOutcome[]) {
    let hold = Infinity;
    const decided = new Set<RepoChange>(changes);
    for (const w of waiting.values()) for (const c of w.changes) if (!decided.has(c)) hold = Math.min(hold, seqOf.get(c) ?? Infinity);
    outcomes.forEach((o, i) => {
      if (o.kind === 'gap' && changes[i]!.kind === 'commit') hold = Math.min(hold, seqOf.get(changes[i] as CommitChange) ?? Infinity);
    });
    return hold <= lastSeq ? { seq: hold - 1, time, read: lastSeq } : { seq: lastSeq, time };
  }

  /** Verifies with the key on record; on a bad signature resolves the DID again, once. */
  async function verifiedCommit(frame: CommitFrame): Promise<CommitChange> {
    const { key, id: resolved } = await keyFor(frame.repo);
    try {
      const change = await verifier.verify(frame, key);
      return resolved ? { ...change, identity: { pds: resolved.pds, handle: resolved.handle, signingKey: resolved.signingKey } } : change;
    } catch (err) {
      if (!(err instanceof SignatureError)) throw err;
      // Once per DID for the commits of a batch that failed together.
      const id = await once(freshLookups, frame.repo, () => opts.resolve(frame.repo, true).catch(() => undefined));
      if (!id) throw err;
      keys.set(frame.repo, id.signingKey);
      const change = await verifier.verify(frame, id.signingKey);
      // The key on the row failed and this one verifies: the row takes it (a rotation).
      return { ...change, identity: { pds: id.pds, handle: id.handle, signingKey: id.signingKey, replaces: true } };
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });
}
