/**
 * Politeness shared through PostgreSQL: several `Politeness` instances, each on its own pool
 * (as separate worker processes are), must together respect one host's concurrency, pacing and
 * cool-down; a holder that dies loses its slots when its leases lapse.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { Politeness } from '../../atproto/net/politeness.ts';
import { RateLimitedError } from '../../atproto/net/errors.ts';
import { PgHostLimits } from './pds-politeness.ts';
import { migrate } from './migrate.ts';
import { openPool } from './pool.ts';

describe('PgHostLimits (politeness shared by every worker)', () => {
  const pools: pg.Pool[] = [];
  let url: string;

  beforeAll(async () => {
    url = await freshDatabase('politeness');
    const first = openPool(url);
    pools.push(first);
    await migrate(first);
  });
  beforeEach(async () => {
    await pools[0]!.query('DELETE FROM pds_leases; DELETE FROM pds_hosts');
  });
  afterAll(async () => {
    for (const p of pools) await p.end();
  });

  /** A "worker": its own pool, its own store client, its own in-process gate. */
  function worker(opts: { concurrency: number; minIntervalMs?: number; maxWaitMs?: number; leaseTtlMs?: number }) {
    const pool = openPool(url);
    pools.push(pool);
    const limits = new PgHostLimits(pool, { leaseTtlMs: opts.leaseTtlMs ?? 30_000 });
    const politeness = new Politeness({ concurrency: opts.concurrency, minIntervalMs: opts.minIntervalMs ?? 0, maxWaitMs: opts.maxWaitMs ?? 60_000 }, limits);
    return { politeness, limits };
  }

  it('three workers with concurrency 2 each never hold more than 2 slots to one host between them', async () => {
    const workers = [worker({ concurrency: 2 }), worker({ concurrency: 2 }), worker({ concurrency: 2 })];
    let running = 0;
    let peak = 0;
    let done = 0;
    await Promise.all(
      workers.flatMap((w) =>
        Array.from({ length: 5 }, async () => {
          const release = await w.politeness.acquire('pds.example:443');
          running++;
          peak = Math.max(peak, running);
          await sleep(40);
          running--;
          done++;
          release();
        }),
      ),
    );
    expect(done).toBe(15);
    expect(peak).toBe(2);
    // Another host is not held up by this one's slots.
    const other = await workers[0]!.politeness.acquire('other.example:443');
    other();
    await sleep(400); // releases are asynchronous, and a finished lease waits 250 ms for the next request: let them land
    expect(Number((await pools[0]!.query('SELECT count(*) AS n FROM pds_leases')).rows[0].n)).toBe(0);
  });

  it('without the shared store, the same three workers add up to 6 (the test can tell)', async () => {
    const workers = [new Politeness({ concurrency: 2 }), new Politeness({ concurrency: 2 }), new Politeness({ concurrency: 2 })];
    let running = 0;
    let peak = 0;
    await Promise.all(
      workers.flatMap((p) =>
        Array.from({ length: 4 }, async () => {
          const release = await p.acquire('pds.example:443');
          running++;
          peak = Math.max(peak, running);
          await sleep(40);
          running--;
          release();
        }),
      ),
    );
    expect(peak).toBe(6);
  });

  it('spaces request starts to one host across workers by minIntervalMs', async () => {
    const workers = [worker({ concurrency: 4, minIntervalMs: 100 }), worker({ concurrency: 4, minIntervalMs: 100 })];
    const starts: number[] = [];
    await Promise.all(
      workers.flatMap((w) =>
        Array.from({ length: 3 }, async () => {
          const release = await w.politeness.acquire('paced.example:443');
          starts.push(performance.now());
          release();
        }),
      ),
    );
    starts.sort((a, b) => a - b);
    // The database's clock paces them, 100 ms apart; ours sees each start a round trip later,
    // and round trips vary with the machine's load (a CI run saw two starts 84.99 ms apart). So
    // each gap may lose a round trip's jitter, and the whole span only the jitter of its two ends:
    // five gaps of 100 ms.
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(60);
    expect(starts[starts.length - 1]! - starts[0]!).toBeGreaterThanOrEqual(5 * 100 - 40);
  });

  it("a 429 one worker sees cools the host down for the others; past maxWaitMs they fail fast", async () => {
    const a = worker({ concurrency: 2, maxWaitMs: 1000 });
    const b = worker({ concurrency: 2, maxWaitMs: 1000 });
    a.politeness.coolDown('busy.example:443', 600);
    await sleep(50); // the shared cool-down is written asynchronously
    const t0 = performance.now();
    const release = await b.politeness.acquire('busy.example:443');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(450);
    release();
    a.politeness.coolDown('busy.example:443', 5000);
    const t1 = performance.now();
    // b may pass the lease it holds from request to request for up to a second (politeness.ts,
    // SHARED_REUSE_MS); past that it asks the store, which tells it of a's cool-down.
    let err: unknown;
    while (!((err = await b.politeness.acquire('busy.example:443').catch((e: unknown) => e)) instanceof RateLimitedError)) {
      (err as () => void)();
      await sleep(20);
    }
    expect(performance.now() - t1).toBeLessThan(1300);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAfterMs).toBeGreaterThan(3500);
  });

  it('the slots of a worker that died come back when its leases lapse, not before', async () => {
    const dead = worker({ concurrency: 1, leaseTtlMs: 1500 });
    await dead.politeness.acquire('lapse.example:443'); // never released: the process "died"
    dead.limits.close(); // and stopped renewing
    const alive = worker({ concurrency: 1, leaseTtlMs: 1500 });
    const t0 = performance.now();
    const release = await alive.politeness.acquire('lapse.example:443');
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(1200);
    expect(waited).toBeLessThan(10_000);
    release();
  });

  it('a live holder renews its leases: a request longer than the lease keeps its slot', async () => {
    const a = worker({ concurrency: 1, leaseTtlMs: 1200 });
    const b = worker({ concurrency: 1, leaseTtlMs: 1200 });
    const held = await a.politeness.acquire('long.example:443');
    const pending = b.politeness.acquire('long.example:443');
    const got = await Promise.race([pending, sleep(3000).then(() => 'still waiting' as const)]);
    expect(got).toBe('still waiting');
    held();
    const r = await pending;
    r();
  });
});
