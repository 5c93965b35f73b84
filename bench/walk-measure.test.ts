import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { measureWalk, postgresTicks, procStat } from './walk-measure.ts';

describe('postgresTicks', () => {
  it('keeps the CPU of a child that exited (reaped), not only of live children', () => {
    // This process stands in for the postmaster: a child burns 0.4 s of CPU (its own, whatever
    // the load) and exits.
    const before = postgresTicks(process.pid);
    const res = spawnSync(process.execPath, ['-e', 'while (process.cpuUsage().user + process.cpuUsage().system < 400_000);']);
    expect(res.status).toBe(0);
    const after = postgresTicks(process.pid);
    // 10 ms ticks; the child is gone, so only the reaped ticks can hold its CPU.
    expect(after - before).toBeGreaterThanOrEqual(35);
    expect(procStat(res.pid!)).toBeUndefined();
  });
});

describe('measureWalk', () => {
  it("counts the walk's CPU, not the reading of PostgreSQL's meter", async () => {
    // A meter that costs 200 ms of this process's CPU each read; a walk of no roots costs next to nothing.
    const burn = () => {
      const start = process.cpuUsage();
      for (;;) {
        const used = process.cpuUsage(start);
        if (used.user + used.system >= 200_000) return 0;
      }
    };
    const m = await measureWalk({ pool: {} as pg.Pool, store: {} as BlobStore }, { type: 'validate' }, [], { label: 'none', emit: () => {}, pgCpuUs: burn });
    expect(m.r.totals.nodes).toBe(0);
    expect(m.cpuUs).toBeLessThan(100_000);
  });
});
