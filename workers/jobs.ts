/**
 * The job registry. A job is a named slice of repowalk's work with its own task queue, so that
 * workers running different jobs (`repowalk worker --job backfill`) are isolated from each other:
 * one job's crash or memory leak cannot take the others down. Every worker registers every
 * workflow (one bundle), but only workflows started on its job's queue reach it.
 */
import type { Stores } from './stores.ts';
import type { Config } from '../config/options.ts';
import { pingActivities } from '../activities/ping.ts';
import { backfillActivities } from '../activities/backfill.ts';
import { walkActivities } from '../activities/walk.ts';
import { maintenanceActivities } from '../activities/maintenance.ts';

export interface JobContext {
  config: Config;
  stores: Stores;
}

export interface JobDefinition {
  name: string;
  description: string;
  /** Workflow types started on this job's queue (for `jobs list` and clients). */
  workflows: string[];
  activities(ctx: JobContext): object;
}

export const JOBS = [
  {
    name: 'backfill',
    description: 'mirror repos from their PDS: resolve, fetch, verify, diff, store; resync with backoff',
    workflows: ['backfill', 'backfillRepo'],
    activities: (ctx) => backfillActivities(ctx),
  },
  {
    name: 'walk',
    description: 'graph walks over the mirror: scrub, validate, corpus, compression-benefit',
    workflows: ['walk', 'walkSlice'],
    activities: (ctx) => walkActivities(ctx),
  },
  {
    name: 'maintenance',
    description: 'periodic upkeep on Schedules: resync sweep, gone re-check, GC, retention, rotating walks, stats; ping',
    workflows: ['ping', 'resyncSweep', 'goneRecheck', 'retention', 'gc', 'rotatingWalk', 'stats'],
    activities: (ctx) => ({ ...pingActivities(ctx.stores), ...maintenanceActivities(ctx) }),
  },
] as const satisfies readonly JobDefinition[];

export type JobName = (typeof JOBS)[number]['name'];

export function taskQueueFor(config: Pick<Config, 'temporal'>, job: JobName): string {
  return `${config.temporal.taskQueue}-${job}`;
}

export class UnknownJobError extends Error {
  override name = 'UnknownJobError';
}

/**
 * The jobs a worker runs: those asked for (`--job`, default all), within the allowlist, minus the
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
  const chosen = JOBS.filter(
    (j) => (requested.length === 0 || requested.includes(j.name)) && (allow.length === 0 || allow.includes(j.name)) && !block.includes(j.name),
  );
  if (chosen.length === 0) throw new UnknownJobError(`no job left to run: asked for ${requested.join(', ') || 'all'}, allowed ${allow.join(', ') || 'all'}, blocked ${block.join(', ') || 'none'}`);
  return chosen;
}
