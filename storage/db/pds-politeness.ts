/**
 * Per-PDS politeness shared by every worker, kept in PostgreSQL (migration 0004): the
 * `SharedHostLimits` that atproto/net/politeness.ts asks for a slot before each request.
 *
 * Why leases in the database rather than session advisory locks: a lease costs no connection
 * while it is held (a fleet holds thousands of slots), it carries pacing and cool-downs in the
 * same row lock, and it works through a transaction-mode pooler. The price is an expiry: a worker
 * killed mid-request frees its slots only when their leases lapse (`leaseTtlMs`), so a holder
 * renews every lease it holds, in one statement, every third of that.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { HostLease, SharedAttempt, SharedHostLimits } from '../../atproto/net/politeness.ts';

export interface PgHostLimitsOptions {
  /** How long a slot outlives a holder that stopped renewing it. Default 30 s. */
  leaseTtlMs?: number;
}

export class PgHostLimits implements SharedHostLimits {
  /** Who holds a lease, for an operator reading `pds_leases`. */
  readonly holder = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  readonly #pool: pg.Pool;
  readonly #ttlMs: number;
  readonly #held = new Set<string>();
  #renewal: NodeJS.Timeout | undefined;

  constructor(pool: pg.Pool, opts: PgHostLimitsOptions = {}) {
    this.#pool = pool;
    this.#ttlMs = opts.leaseTtlMs ?? 30_000;
  }

  async tryAcquire(host: string, limits: { concurrency: number; minIntervalMs: number }): Promise<SharedAttempt> {
    const { rows } = await this.#pool.query<{ lease_id: string | null; wait_ms: number; cooling_down: boolean }>(
      'SELECT lease_id, wait_ms, cooling_down FROM pds_lease_acquire($1, $2, $3, $4, $5)',
      [host, this.holder, limits.concurrency, limits.minIntervalMs, this.#ttlMs],
    );
    const row = rows[0]!;
    if (row.lease_id === null) return { waitMs: Math.max(0, row.wait_ms), coolingDown: row.cooling_down };
    const id = row.lease_id;
    this.#held.add(id);
    this.#scheduleRenewal();
    const lease: HostLease = {
      release: async () => {
        if (!this.#held.delete(id)) return;
        if (this.#held.size === 0) this.#stopRenewal();
        await this.#pool.query('DELETE FROM pds_leases WHERE lease_id = $1', [id]);
      },
    };
    return { lease };
  }

  async coolDown(host: string, ms: number): Promise<void> {
    await this.#pool.query(
      `INSERT INTO pds_hosts AS h (host, cool_until) VALUES ($1, clock_timestamp() + make_interval(secs => $2 / 1000.0))
       ON CONFLICT (host) DO UPDATE SET cool_until = greatest(h.cool_until, excluded.cool_until)`,
      [host, ms],
    );
  }

  /** Leases held by this process now (for tests and progress). */
  get heldCount(): number {
    return this.#held.size;
  }

  /** Stops renewing; leases still held lapse after their expiry. */
  close(): void {
    this.#stopRenewal();
  }

  #scheduleRenewal(): void {
    if (this.#renewal) return;
    this.#renewal = setInterval(() => {
      const ids = [...this.#held];
      if (ids.length === 0) return;
      // A failed renewal is retried at the next tick; a lease that lapses meanwhile only lets
      // one more request start somewhere, it loses nothing.
      void this.#pool
        .query(`UPDATE pds_leases SET expires_at = clock_timestamp() + make_interval(secs => $2 / 1000.0) WHERE lease_id = ANY($1::bigint[])`, [ids, this.#ttlMs])
        .catch(() => {});
    }, Math.max(1000, Math.floor(this.#ttlMs / 3)));
    // A renewal timer alone must not keep a finished process alive.
    this.#renewal.unref();
  }

  #stopRenewal(): void {
    if (this.#renewal) clearInterval(this.#renewal);
    this.#renewal = undefined;
  }
}
