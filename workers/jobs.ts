/**
 * The job registry. A job is a named slice of repowalk's work with its own task queue, so that
 * workers running different jobs (`repowalk worker --job backfill`) are isolated from each other:
 * one job's crash or memory leak cannot take the others down. Every worker registers every
 * workflow (one bundle), but only workflows started on its job's queue reach it.
 */
import { z } from 'zod';
import type { Config } from '../config/options.ts';
import { SCHEDULE_NAMES, type ScheduleName } from '../config/schedule-names.ts';
import { JOB_NAMES, type JobName } from '../config/task-queues.ts';
import type { JobContext } from '../activities/context.ts';
import type * as workflows from '../workflows/index.ts';
import { pingActivities } from '../activities/ping.ts';
import { backfillActivities } from '../activities/backfill.ts';
import { walkActivities } from '../activities/walk.ts';
import { maintenanceActivities } from '../activities/maintenance.ts';
import { syncActivities } from '../activities/sync.ts';

export type { JobContext } from '../activities/context.ts';
export { taskQueueFor, type JobName } from '../config/task-queues.ts';

/** A workflow the worker bundles: an export of `workflows/index.ts`. */
export type WorkflowName = keyof typeof workflows;

export interface JobDefinition {
  name: JobName;
  description: string;
  /**
   * The part of the configuration the job reads, with the limits the job needs beyond each
   * option's own; checked when a worker starts the job (`checkJobConfig`).
   */
  config: z.ZodType;
  /** Workflow types started on this job's queue (for `jobs list`): exports of `workflows/index.ts`, each in one job. */
  workflows: readonly WorkflowName[];
  activities(ctx: JobContext): object;
  /** The Temporal Schedules whose workflows run on this job's queue (`repowalk schedule apply`). */
  schedules: readonly ScheduleName[];
  /** A long-running service the worker starts with the job and closes when it stops (serve). */
  service?(ctx: JobContext): Promise<{ url: string; close(): Promise<void> }>;
  /** Run only when asked for by name (`--job`): it binds a port, so a plain `worker` does not. */
  optIn?: boolean;
}

/** What the jobs that talk to PDSes (backfill, sync) need of the network options. */
const NETWORK_CONFIG = z.object({
  network: z.object({
    plcUrl: z.string().url(),
    identityTtlSeconds: z.number().int().positive(),
    // Per host: past a few dozen, the mirror is a load on one PDS, not a politeness.
    pdsConcurrency: z.number().int().min(1).max(64),
    pdsMinIntervalMs: z.number().int().min(0),
    fetchTimeoutSeconds: z.number().int().min(5),
  }),
});

export const JOBS = [
  {
    name: 'backfill',
    description: 'mirror repos from their PDS: resolve, fetch, verify, diff, store; resync with backoff',
    config: NETWORK_CONFIG,
    workflows: ['backfill', 'backfillRepo'],
    activities: (ctx) => backfillActivities(ctx),
    schedules: [],
  },
  {
    name: 'walk',
    description: 'graph walks over the mirror: scrub, validate, corpus, compression-benefit',
    config: z.object({
      blobstore: z.object({ kind: z.enum(['local', 's3', 'multiplex']), writeQuorum: z.number().int().min(1) }),
    }),
    workflows: ['walk', 'walkSlice'],
    activities: (ctx) => walkActivities(ctx),
    schedules: [],
  },
  {
    name: 'maintenance',
    description: 'periodic upkeep on Schedules: resync sweep, gone re-check, GC, retention, rotating walks, stats; ping',
    config: z.object({
      maintenance: z.object({
        rotatingSampleRate: z.number().int().min(1),
        gcGraceSeconds: z.number().int().min(0),
        gcRepackBelow: z.number().min(0).max(1),
      }),
    }),
    workflows: ['ping', 'resyncSweep', 'goneRecheck', 'retention', 'gc', 'rotatingWalk', 'stats'],
    activities: (ctx) => ({ ...pingActivities(ctx.stores), ...maintenanceActivities(ctx) }),
    // Every periodic job starts a maintenance workflow.
    schedules: SCHEDULE_NAMES,
  },
  {
    name: 'serve',
    description: 'serve the mirror: XRPC as a PDS answers it, the tap event stream, admin endpoints (an HTTP server on serve.host:serve.port)',
    config: z.object({
      serve: z.object({ host: z.string().min(1), port: z.number().int().min(0).max(65535), stallSeconds: z.number().int().min(1) }),
    }),
    workflows: [],
    activities: () => ({}),
    schedules: [],
    service: async (ctx: JobContext) => (await import('./serve-service.ts')).startServeService(ctx.config, ctx.stores),
    optIn: true,
  },
  {
    name: 'sync',
    description: 'live sync: follow an upstream firehose (subscribeRepos) and apply it through the store path; gaps go to backfill',
    config: NETWORK_CONFIG,
    workflows: ['subscribe', 'refresh'],
    activities: (ctx) => syncActivities(ctx),
    schedules: [],
  },
] as const satisfies readonly JobDefinition[];

// Every job name has its row: a name in `JOB_NAMES` without one does not compile.
void (JOB_NAMES satisfies readonly (typeof JOBS)[number]['name'][]);
// Every workflow the worker bundles belongs to a job: an export of workflows/index.ts that no
// job lists does not compile (jobs.test.ts checks that none is listed twice).
void ([] as WorkflowName[] satisfies (typeof JOBS)[number]['workflows'][number][]);

/** A job name that is not in the registry, or a selection that leaves no job to run. */
export class UnknownJobError extends Error {
  override name = 'UnknownJobError';
}

/** The configuration does not suit a job asked for; `problems` names the job, the option and what is wrong. */
export class JobConfigError extends Error {
  override name = 'JobConfigError';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`the configuration does not suit the jobs asked for:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

/** Checks the configuration against each job's own schema; names the job, the option and the problem. */
export function checkJobConfig(jobs: readonly JobDefinition[], config: Config): void {
  const problems: string[] = [];
  for (const job of jobs) {
    const r = job.config.safeParse(config);
    if (!r.success) for (const i of r.error.issues) problems.push(`job ${job.name}: ${i.path.join('.')}: ${i.message}`);
  }
  if (problems.length > 0) throw new JobConfigError(problems);
}

/**
 * The jobs a worker runs: those asked for (`--job`, default all but opt-in ones), within the allowlist, minus the
 * blocklist (the blocklist wins). An unknown name anywhere is refused with the known ones listed.
 */
export function selectJobs(requested: string[], allow: string[], block: string[]): JobDefinition[] {
  const known = new Set<string>(JOBS.map((j) => j.name));
  for (const [source, names] of [['--job', requested], ['REPOWALK_JOBS_ALLOW', allow], ['REPOWALK_JOBS_BLOCK', block]] as const) {
    const unknown = names.filter((n) => !known.has(n));
    if (unknown.length > 0) {
      throw new UnknownJobError(`unknown job ${unknown.map((n) => JSON.stringify(n)).join(', ')} in ${source}; known jobs: ${[...known].join(', ')}`);
    }
  }
  const chosen = (JOBS as readonly JobDefinition[]).filter(
    (j) => (requested.length === 0 ? !j.optIn : requested.includes(j.name)) && (allow.length === 0 || allow.includes(j.name)) && !block.includes(j.name),
  );
  if (chosen.length === 0) throw new UnknownJobError(`no job left to run: asked for ${requested.join(', ') || 'all'}, allowed ${allow.join(', ') || 'all'}, blocked ${block.join(', ') || 'none'}`);
  return chosen;
}
