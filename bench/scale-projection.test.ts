import { describe, expect, it } from 'vitest';
import { ASSUMPTIONS, project, type PerUnit } from './scale-projection.ts';

const unit: PerUnit = {
  recordsPerRepo: 50,
  temporal: { bulkEventsPerRepo: 0.2, bulkBytesPerRepo: 300, activityTasksPerRepo: 0.025, perRepoWorkflowEvents: 13, perRepoWorkflowBytes: 2700 },
  postgres: { bytesPerRecord: 290, bytesPerEvent: 320, bytesPerBlock: 200, blocksPerRecord: 1.36, bytesPerRepoRow: 860, databaseBytesPerRecord: 960, backendCpuSecondsPerRecord: 0.00015, walBytesPerRecord: 1150 },
  s3: { objectsPerRepo: 1, requestsPerRepo: 1, requestsByMethodPerRepo: { PUT: 1 }, bytesPerRecord: 330 },
  worker: { cpuSecondsPerRecord: 0.0004, cpuSecondsPerRepo: 0.02 },
  network: { pdsRequestsPerRepo: { 'com.atproto.sync.getRepo': 1 }, carBytesPerRecord: 350, bytesPerRepo: 18000 },
};

describe('the full-network projection', () => {
  it('bounds the wall time by the PDS rate limit: repos / (20 per second × egress IPs)', () => {
    const p = project(unit);
    expect(p.wall.rateLimitedDays).toBeCloseTo(40e6 / (20 * 16) / 86_400, 6);
    expect(p.wall.cpuBoundDays).toBeCloseTo((20e9 * 0.0004) / 128 / 86_400, 6);
    expect(p.wall.bound).toBe('PDS rate limit');
    expect(p.wall.coresPerIpAtRateLimit).toBeCloseTo(500 * 0.0004 * 20, 9);
  });

  it('moves the bound to worker CPU when an IP has fewer cores than the rate limit keeps busy', () => {
    const p = project(unit, { ...ASSUMPTIONS, coresPerWorkerHost: 2 });
    expect(p.wall.bound).toBe('worker CPU');
    expect(p.wall.days).toBeCloseTo(p.wall.cpuBoundDays, 9);
  });

  it('counts history for the bulk path per repo and for the per-repo path per failing attempt', () => {
    const p = project(unit);
    expect(p.temporal.historyEvents).toBeCloseTo(40e6 * 0.2 + 40e6 * 0.02 * 3 * 13, 0);
    expect(p.postgres.coresAtWallTime).toBeCloseTo((20e9 * 0.00015) / (p.wall.days * 86_400), 6);
  });
});
