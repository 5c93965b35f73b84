import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { RateLimitedError } from './errors.ts';
import { Politeness, type SharedHostLimits } from './politeness.ts';

describe('Politeness', () => {
  it('never lets more than `concurrency` requests to one host run at once, and serves FIFO', async () => {
    const p = new Politeness({ concurrency: 3 });
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const release = await p.acquire('pds.example:443');
        order.push(i);
        running++;
        peak = Math.max(peak, running);
        await sleep(5 + (i % 3) * 5);
        running--;
        release();
      }),
    );
    expect(peak).toBe(3);
    expect(order).toEqual([...Array(12).keys()]);
    expect(p.stats('pds.example:443')).toEqual({ active: 0, waiting: 0 });
  });

  it('limits each host on its own', async () => {
    const p = new Politeness({ concurrency: 1 });
    const a = await p.acquire('a:443');
    // A different host is not held up by a's slot.
    const b = await Promise.race([p.acquire('b:443'), sleep(200).then(() => 'timeout' as const)]);
    expect(b).not.toBe('timeout');
    a();
    if (typeof b === 'function') b();
  });

  it('spaces request starts to one host by minIntervalMs', async () => {
    const p = new Politeness({ concurrency: 10, minIntervalMs: 50 });
    const starts: number[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        const release = await p.acquire('h:1');
        starts.push(performance.now());
        release();
      }),
    );
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(48);
  });

  it('holds every new request to a host during its cool-down', async () => {
    const p = new Politeness({ concurrency: 4 });
    p.coolDown('h:1', 300);
    expect(p.coolDownLeft('h:1')).toBeGreaterThan(250);
    const t0 = performance.now();
    const release = await p.acquire('h:1');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    release();
    // A shorter cool-down never cuts a longer one short.
    p.coolDown('h:1', 400);
    p.coolDown('h:1', 10);
    expect(p.coolDownLeft('h:1')).toBeGreaterThan(350);
  });

  it('fails fast with RateLimitedError when the cool-down is longer than maxWaitMs, waiters included', async () => {
    const p = new Politeness({ concurrency: 1, maxWaitMs: 1000 });
    const first = await p.acquire('h:1');
    const queued = p.acquire('h:1');
    p.coolDown('h:1', 5000);
    const err = await queued.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect((err as RateLimitedError).retryAfterMs).toBeGreaterThan(4900);
    await expect(p.acquire('h:1')).rejects.toBeInstanceOf(RateLimitedError);
    first();
  });

  it('caps a cool-down at maxCoolDownMs', () => {
    const p = new Politeness({ maxCoolDownMs: 2000 });
    p.coolDown('h:1', 86_400_000);
    expect(p.coolDownLeft('h:1')).toBeLessThanOrEqual(2000);
  });

  it('takes an aborted waiter out of the queue with the signal reason', async () => {
    const p = new Politeness({ concurrency: 1 });
    const held = await p.acquire('h:1');
    const ac = new AbortController();
    const waiting = p.acquire('h:1', ac.signal);
    const next = p.acquire('h:1');
    ac.abort(new Error('cancelled'));
    await expect(waiting).rejects.toThrow('cancelled');
    held();
    held(); // a second release is harmless
    const r = await next;
    expect(p.stats('h:1')).toEqual({ active: 1, waiting: 0 });
    r();
  });
});

describe('Politeness with a shared store', () => {
  /** A store that grants `slots` leases and counts its round trips. */
  function fakeStore(slots: number) {
    const store = { held: 0, peak: 0, acquires: 0, releases: 0 };
    const limits: SharedHostLimits = {
      async tryAcquire() {
        store.acquires++;
        await sleep(1);
        if (store.held >= slots) return { waitMs: 0, coolingDown: false };
        store.held++;
        store.peak = Math.max(store.peak, store.held);
        let released = false;
        return {
          lease: {
            release: async () => {
              if (released) return;
              released = true;
              store.releases++;
              await sleep(1);
              store.held--;
            },
          },
        };
      },
      async coolDown() {},
    };
    return { store, limits };
  }

  it('passes a finished request\'s lease to the next request of the process instead of a round trip per request', async () => {
    const { store, limits } = fakeStore(2);
    const p = new Politeness({ concurrency: 2 }, limits);
    let running = 0;
    let peak = 0;
    // Two lanes of back-to-back requests, and a burst that queues behind them.
    const lane = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const release = await p.acquire('pds.example:443');
        running++;
        peak = Math.max(peak, running);
        await sleep(2);
        running--;
        release();
      }
    };
    await Promise.all([lane(20), lane(20), ...Array.from({ length: 6 }, () => lane(1))]);
    expect(peak).toBe(2);
    expect(store.peak).toBe(2);
    expect(store.acquires).toBeLessThanOrEqual(4);
    await sleep(300); // parked leases go back once nobody takes them
    expect(store.held).toBe(0);
    expect(store.releases).toBe(store.acquires);
  });

  it('takes every lease from the store when requests are paced, and after a cool-down', async () => {
    const paced = fakeStore(4);
    const p = new Politeness({ concurrency: 4, minIntervalMs: 5 }, paced.limits);
    for (let i = 0; i < 5; i++) (await p.acquire('paced.example:443'))();
    expect(paced.store.acquires).toBe(5);

    const cooled = fakeStore(4);
    const q = new Politeness({ concurrency: 4 }, cooled.limits);
    const first = await q.acquire('busy.example:443');
    q.coolDown('busy.example:443', 30);
    first();
    (await q.acquire('busy.example:443'))();
    expect(cooled.store.acquires).toBe(2);
    await sleep(300);
    expect(cooled.store.held).toBe(0);
  });
});
