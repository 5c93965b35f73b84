/**
 * The jobs a worker can run (`repowalk worker --job`) and the task queue of each. Every client
 * that starts a workflow (the CLI, the schedules, a workflow starting another job's child) names
 * the queue with `taskQueueFor`; the job registry (`workers/jobs.ts`) has one row per name.
 */
import type { Config } from './options.ts';

export const JOB_NAMES = ['backfill', 'walk', 'maintenance', 'serve'] as const;

export type JobName = (typeof JOB_NAMES)[number];

/** `<REPOWALK_TASK_QUEUE>-<job>`: one queue per job, so that jobs on different workers stay apart. */
export function taskQueueFor(config: Pick<Config, 'temporal'>, job: JobName): string {
  return `${config.temporal.taskQueue}-${job}`;
}
