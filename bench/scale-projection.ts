/**
 * The arithmetic of docs/SCALE.md: per-unit costs measured by bench/scale.ts, times the size of
 * the network, for a stated cluster. Pure, so that every figure in the plan is this function of
 * a measured input and an assumption named here.
 */

export interface PerUnit {
  recordsPerRepo: number;
  temporal: { bulkEventsPerRepo: number; bulkBytesPerRepo: number; activityTasksPerRepo: number; perRepoWorkflowEvents: number; perRepoWorkflowBytes: number };
  postgres: {
    bytesPerRecord: number;
    bytesPerEvent: number;
    bytesPerBlock: number;
    blocksPerRecord: number;
    bytesPerRepoRow: number;
    databaseBytesPerRecord: number;
    backendCpuSecondsPerRecord: number;
    walBytesPerRecord: number;
  };
  s3: { objectsPerRepo: number; requestsPerRepo: number; requestsByMethodPerRepo: Record<string, number>; bytesPerRecord: number };
  worker: { cpuSecondsPerRecord: number; cpuSecondsPerRepo: number };
  network: { pdsRequestsPerRepo: Record<string, number>; carBytesPerRecord: number; bytesPerRepo: number };
}

export interface Assumptions {
  repos: number;
  records: number;
  getRepoPerSecondPerIp: number;
  workerHosts: number;
  coresPerWorkerHost: number;
  failingFraction: number;
  attemptsPerFailingRepo: number;
  partitions: number;
}

/** The network and the cluster the plan is for. Change them here; the plan quotes them. */
export const ASSUMPTIONS: Readonly<Assumptions> = {
  repos: 40e6,
  records: 20e9,
  /** The PDS rate limit: 6,000 getRepo per 5 minutes per client IP. */
  getRepoPerSecondPerIp: 6000 / 300,
  /** Worker hosts, each with its own egress IP. */
  workerHosts: 16,
  coresPerWorkerHost: 8,
  /** Repos whose first attempt fails and take the per-repo workflow path (resync). */
  failingFraction: 0.02,
  /** Attempts such a repo makes on average before it settles. */
  attemptsPerFailingRepo: 3,
  /** PostgreSQL hash partitions for records, blocks and events (by DID hash; see SCALE.md). */
  partitions: 64,
};

const GB = 1e9;
const TB = 1e12;
const DAY = 86_400;

export function project(u: PerUnit, a: Readonly<Assumptions> = ASSUMPTIONS) {
  const failing = a.repos * a.failingFraction;
  const cores = a.workerHosts * a.coresPerWorkerHost;
  const blocks = a.records * u.postgres.blocksPerRecord;
  const cpuSeconds = a.records * u.worker.cpuSecondsPerRecord;
  // The rate limit per (IP, PDS host): with every repo behind one limit (the conservative case,
  // e.g. one large PDS or an entryway in front of them), fetching is bounded by IPs alone.
  const rateLimitedSeconds = a.repos / (a.getRepoPerSecondPerIp * a.workerHosts);
  const cpuBoundSeconds = cpuSeconds / cores;
  const wallSeconds = Math.max(rateLimitedSeconds, cpuBoundSeconds);
  const out = {
    assumptions: a,
    temporal: {
      historyEvents: a.repos * u.temporal.bulkEventsPerRepo + failing * u.temporal.perRepoWorkflowEvents * a.attemptsPerFailingRepo,
      historyGB: (a.repos * u.temporal.bulkBytesPerRepo + failing * u.temporal.perRepoWorkflowBytes * a.attemptsPerFailingRepo) / GB,
      activityTasks: a.repos * u.temporal.activityTasksPerRepo + failing * a.attemptsPerFailingRepo,
    },
    postgres: {
      recordsTB: (a.records * u.postgres.bytesPerRecord) / TB,
      eventsTB: (a.records * u.postgres.bytesPerEvent) / TB,
      blocks,
      blocksTB: (blocks * u.postgres.bytesPerBlock) / TB,
      reposGB: (a.repos * u.postgres.bytesPerRepoRow) / GB,
      databaseTB: (a.records * u.postgres.databaseBytesPerRecord) / TB,
      rowsPerPartition: { records: a.records / a.partitions, blocks: blocks / a.partitions, events: a.records / a.partitions },
      backendCpuCoreDays: (a.records * u.postgres.backendCpuSecondsPerRecord) / DAY,
      walTB: (a.records * u.postgres.walBytesPerRecord) / TB,
      /** PostgreSQL cores the backfill keeps busy when it runs at the wall time below. */
      coresAtWallTime: 0,
    },
    s3: {
      objects: a.repos * u.s3.objectsPerRepo,
      requests: a.repos * u.s3.requestsPerRepo,
      TB: (a.records * u.s3.bytesPerRecord) / TB,
    },
    worker: { cpuCoreDays: cpuSeconds / DAY, cores },
    network: {
      pdsTB: (a.records * u.network.carBytesPerRecord) / TB,
      getRepoRequests: a.repos * (u.network.pdsRequestsPerRepo['com.atproto.sync.getRepo'] ?? 1) + failing * a.attemptsPerFailingRepo,
    },
    wall: {
      rateLimitedDays: rateLimitedSeconds / DAY,
      cpuBoundDays: cpuBoundSeconds / DAY,
      days: wallSeconds / DAY,
      bound: rateLimitedSeconds >= cpuBoundSeconds ? 'PDS rate limit' : 'worker CPU',
      /**
       * Cores one egress IP keeps busy at the rate limit (an average repo's CPU times 20 repos/s):
       * with fewer cores per IP than this, CPU binds before the rate limit does.
       */
      coresPerIpAtRateLimit: (a.records / a.repos) * u.worker.cpuSecondsPerRecord * a.getRepoPerSecondPerIp,
      /** Records per second the whole cluster stores at that wall time. */
      recordsPerSecond: a.records / wallSeconds,
    },
  };
  out.postgres.coresAtWallTime = (a.records * u.postgres.backendCpuSecondsPerRecord) / wallSeconds;
  return out;
}
