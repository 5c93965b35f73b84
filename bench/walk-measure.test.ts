import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { postgresTicks, procStat } from './walk-measure.ts';

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
