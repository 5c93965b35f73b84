/**
 * repowalk's Temporal Schedules: one per periodic job, made from configuration. `applySchedules`
 * creates each that is missing, updates in place (same id) each whose spec, action or policies
 * differ from the configuration, leaves alone each that matches — a second apply changes
 * nothing — and deletes each that the configuration disables. It manages what the
 * configuration says (interval, workflow, task queue, input, overlap and catch-up policies),
 * not the schedule's state: an operator's pause survives an apply.
 *
 * Schedule ids are `<task queue prefix>-<name>` (`repowalk-gc` by default), and each run's
 * workflow id is that id plus the time the schedule started it.
 */
import { ScheduleNotFoundError, ScheduleOverlapPolicy, isGrpcDeadlineError, type Client, type ScheduleDescription, type ScheduleOptions, type ScheduleSummary } from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import type { Config } from '../config/options.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { resyncSweep, type SweepInput } from '../workflows/resync-sweep.ts';
import { goneRecheck } from '../workflows/gone-recheck.ts';
import { retention as retentionWorkflow, type RetentionInput } from '../workflows/retention.ts';
import { gc as gcWorkflow, type GcInput } from '../workflows/gc.ts';
import { rotatingWalk, type RotatingWalkInput } from '../workflows/rotating-walk.ts';
import { stats } from '../workflows/stats.ts';
import { refresh, type RefreshInput } from '../workflows/subscribe-refresh.ts';
import { SCHEDULE_NAMES, type ScheduleName } from '../config/schedule-names.ts';

export { SCHEDULE_NAMES, type ScheduleName } from '../config/schedule-names.ts';

export interface ScheduleDefinition {
  name: ScheduleName;
  scheduleId: string;
  /** One line for people: the schedule's memo and each run's summary in the Web UI. */
  description: string;
  everySeconds: number;
  /**
   * Where in each interval it fires (intervals count from the Unix epoch): the schedules are
   * spread over their interval, so that the daily ones (GC, the rotating walks) and the
   * five-minute ones do not all start at the same second.
   */
  offsetSeconds: number;
  workflowType: string;
  taskQueue: string;
  /** The workflow's arguments (plain JSON). */
  args: unknown[];
}

/** The workflow a schedule starts and its arguments, checked against the workflow's signature. */
function starts<W extends Workflow>(workflow: W, args: Parameters<W>): Pick<ScheduleDefinition, 'workflowType' | 'args'> {
  return { workflowType: workflow.name, args };
}

/** Every schedule the configuration describes, enabled or not. */
export function scheduleDefinitions(config: Pick<Config, 'temporal' | 'schedules' | 'maintenance'>): ScheduleDefinition[] {
  const s = config.schedules;
  const m = config.maintenance;
  const queue = taskQueueFor(config, 'maintenance');
  const sweep: SweepInput = { backfillTaskQueue: taskQueueFor(config, 'backfill'), settings: m.resyncSettings };
  const gc: GcInput = { graceSeconds: m.gcGraceSeconds, repackBelow: m.gcRepackBelow };
  const retention: RetentionInput = {};
  const scrub: RotatingWalkInput = { type: 'scrub', rate: m.rotatingSampleRate, walkTaskQueue: taskQueueFor(config, 'walk'), walk: { repair: m.rotatingScrubRepair } };
  const validate: RotatingWalkInput = { type: 'validate', rate: m.rotatingSampleRate, walkTaskQueue: taskQueueFor(config, 'walk') };
  const refreshInput: RefreshInput = { backfillTaskQueue: taskQueueFor(config, 'backfill'), settings: m.resyncSettings };
  // Each runs on the maintenance queue unless its row names another.
  const rows: Record<ScheduleName, Omit<ScheduleDefinition, 'name' | 'scheduleId' | 'taskQueue' | 'offsetSeconds'> & { taskQueue?: string }> = {
    'resync-sweep': { description: 'resync sweep: start a backfill for each repo whose retry time has passed and that has none running', everySeconds: s.resyncSweepSeconds, ...starts(resyncSweep, [sweep]) },
    'gone-recheck': { description: 'gone re-check: try again each gone repo whose re-check time has passed', everySeconds: s.goneRecheckSeconds, ...starts(goneRecheck, [sweep]) },
    retention: { description: 'retention: trim events past their retention (ephemeral mode)', everySeconds: s.retentionSeconds, ...starts(retentionWorkflow, [retention]) },
    gc: { description: `GC: mark live blocks, sweep dead packs older than ${m.gcGraceSeconds} s, repack packs below ${m.gcRepackBelow} live`, everySeconds: s.gcSeconds, ...starts(gcWorkflow, [gc]) },
    'rotating-scrub': { description: `rotating scrub: the next 1/${m.rotatingSampleRate} of the mirror${m.rotatingScrubRepair ? ', repairing' : ''}`, everySeconds: s.rotatingScrubSeconds, ...starts(rotatingWalk, [scrub]) },
    'rotating-validate': { description: `rotating validate: the next 1/${m.rotatingSampleRate} of the mirror`, everySeconds: s.rotatingValidateSeconds, ...starts(rotatingWalk, [validate]) },
    stats: { description: 'stats: count repos by state, blocks, packs and bytes', everySeconds: s.statsSeconds, ...starts(stats, []) },
    refresh: {
      description: 'refresh: getLatestCommit for each active repo no subscription covers, getRepo?since= where the rev moved',
      everySeconds: s.refreshSeconds,
      // The sync job runs it: it reaches PDSes with that job's identity cache and politeness.
      taskQueue: taskQueueFor(config, 'sync'),
      ...starts(refresh, [refreshInput]),
    },
  };
  return SCHEDULE_NAMES.map((name, i) => ({
    name,
    scheduleId: `${config.temporal.taskQueue}-${name}`,
    offsetSeconds: Math.floor((i * rows[name].everySeconds) / SCHEDULE_NAMES.length),
    ...rows[name],
    taskQueue: rows[name].taskQueue ?? queue,
  }));
}

/** What the schedule for `d` is made of: the parts `applySchedules` owns. */
export function scheduleOptions(d: ScheduleDefinition): ScheduleOptions {
  return {
    scheduleId: d.scheduleId,
    spec: { intervals: [{ every: d.everySeconds * 1000, offset: d.offsetSeconds * 1000 }] },
    action: { type: 'startWorkflow', workflowType: d.workflowType, taskQueue: d.taskQueue, workflowId: d.scheduleId, args: d.args, staticSummary: d.description },
    policies: {
      // A run still going when the next is due (a long GC) is not doubled.
      overlap: ScheduleOverlapPolicy.SKIP,
      // After an outage, one catch-up run at most, and only a recent one.
      catchupWindow: catchupWindowMs(d.everySeconds),
      pauseOnFailure: false,
    },
    memo: { repowalk: d.description },
  };
}

function catchupWindowMs(everySeconds: number): number {
  return Math.max(60, Math.min(everySeconds, 3600)) * 1000;
}

/** JSON with object keys sorted, so that equal values compare equal whatever their key order. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

/** How the schedule as the server describes it differs from `d`: one line per difference, none when it matches. */
export function scheduleDifferences(desc: ScheduleDescription, d: ScheduleDefinition): string[] {
  const want = scheduleOptions(d);
  const out: string[] = [];
  const interval = (every: number, offset: number) => `every ${every} s${offset ? ` at +${offset} s` : ''}`;
  const intervals = (desc.spec.intervals ?? []).map((i) => interval(i.every / 1000, (i.offset ?? 0) / 1000));
  const wanted = interval(d.everySeconds, d.offsetSeconds);
  if (canonical(intervals) !== canonical([wanted]) || (desc.spec.calendars?.length ?? 0) > 0 || (desc.spec.skip?.length ?? 0) > 0) {
    out.push(`spec: ${[...intervals, ...(desc.spec.calendars?.length ? ['calendars'] : [])].join(', ') || 'none'} → ${wanted}`);
  }
  const a = desc.action;
  const w = want.action;
  if (a.workflowType !== w.workflowType) out.push(`workflow: ${a.workflowType} → ${String(w.workflowType)}`);
  if (a.taskQueue !== w.taskQueue) out.push(`task queue: ${a.taskQueue} → ${w.taskQueue}`);
  if (a.workflowId !== w.workflowId) out.push(`workflow id: ${a.workflowId} → ${w.workflowId}`);
  if (canonical(a.args ?? []) !== canonical(JSON.parse(JSON.stringify(w.args ?? [])))) out.push(`input: ${canonical(a.args ?? [])} → ${canonical(w.args ?? [])}`);
  if ((a.staticSummary ?? '') !== (w.staticSummary ?? '')) out.push('summary');
  const p = want.policies!;
  if (desc.policies.overlap !== p.overlap) out.push(`overlap: ${desc.policies.overlap} → ${p.overlap}`);
  if (desc.policies.catchupWindow !== p.catchupWindow) out.push(`catch-up window: ${desc.policies.catchupWindow} ms → ${String(p.catchupWindow)} ms`);
  if (desc.policies.pauseOnFailure !== p.pauseOnFailure) out.push(`pause on failure: ${desc.policies.pauseOnFailure} → ${p.pauseOnFailure}`);
  return out;
}

export interface ApplyReport {
  created: string[];
  updated: { scheduleId: string; changes: string[] }[];
  unchanged: string[];
  deleted: string[];
}

/**
 * Makes the server's schedules match the configuration: see the module comment. With `dryRun`,
 * reports what it would do and does nothing.
 */
export async function applySchedules(client: Client, config: Pick<Config, 'temporal' | 'schedules' | 'maintenance'>, opts: { dryRun?: boolean } = {}): Promise<ApplyReport> {
  const report: ApplyReport = { created: [], updated: [], unchanged: [], deleted: [] };
  const disabled = new Set<ScheduleName>(config.schedules.disabled);
  for (const d of scheduleDefinitions(config)) {
    const handle = client.schedule.getHandle(d.scheduleId);
    const desc = await describeSchedule(client, d.scheduleId).catch((err: unknown) => {
      if (err instanceof ScheduleNotFoundError) return undefined;
      throw err;
    });
    if (disabled.has(d.name)) {
      if (desc) {
        if (!opts.dryRun) await handle.delete();
        report.deleted.push(d.scheduleId);
      }
      continue;
    }
    if (!desc) {
      if (!opts.dryRun) await client.schedule.create(scheduleOptions(d));
      report.created.push(d.scheduleId);
      continue;
    }
    const changes = scheduleDifferences(desc, d);
    if (changes.length === 0) {
      report.unchanged.push(d.scheduleId);
      continue;
    }
    if (!opts.dryRun) {
      const want = scheduleOptions(d);
      // The state (paused, note, remaining actions) is the operator's: kept as it is.
      await handle.update((prev) => ({ spec: want.spec, action: want.action, policies: want.policies, state: prev.state }));
    }
    report.updated.push({ scheduleId: d.scheduleId, changes });
  }
  return report;
}

/**
 * A schedule's description. The server answers a describe by querying the schedule's own
 * workflow, and on a busy server that query can run out its deadline (DEADLINE_EXCEEDED): a
 * describe changes nothing, so it is asked again, three times in all. Any other error
 * (ScheduleNotFoundError among them) is the caller's at once.
 */
export async function describeSchedule(client: Client, scheduleId: string, attempts = 3): Promise<ScheduleDescription> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.schedule.getHandle(scheduleId).describe();
    } catch (err) {
      if (attempt >= attempts || !isGrpcDeadlineError(err)) throw err;
    }
  }
}

export interface ScheduleListing {
  scheduleId: string;
  workflowType: string | undefined;
  /** Interval lengths, in seconds. */
  everySeconds: number[];
  paused: boolean;
  note: string | undefined;
  /** Workflow ids of the most recent runs, oldest first. */
  recentRuns: { workflowId: string; at: string }[];
  nextRunAt: string | undefined;
}

function listing(s: ScheduleSummary): ScheduleListing {
  return {
    scheduleId: s.scheduleId,
    workflowType: s.action?.workflowType,
    everySeconds: (s.spec?.intervals ?? []).map((i) => i.every / 1000),
    paused: s.state.paused,
    note: s.state.note,
    recentRuns: s.info.recentActions.map((a) => ({ workflowId: a.action.workflow.workflowId, at: a.takenAt.toISOString() })),
    nextRunAt: s.info.nextActionTimes[0]?.toISOString(),
  };
}

/**
 * The schedules on the server whose id starts with `prefix` (default: all), sorted by id.
 * The server's schedule list is a visibility query: a schedule created moments ago may not be
 * in it yet.
 */
export async function listSchedules(client: Client, opts: { prefix?: string } = {}): Promise<ScheduleListing[]> {
  const out: ScheduleListing[] = [];
  for await (const s of client.schedule.list()) {
    if (opts.prefix === undefined || s.scheduleId.startsWith(opts.prefix)) out.push(listing(s));
  }
  return out.sort((a, b) => (a.scheduleId < b.scheduleId ? -1 : a.scheduleId > b.scheduleId ? 1 : 0));
}
