/**
 * `repowalk walk start|status|pause|resume|cancel|list|findings`: thin wiring from flags to the
 * `walk` workflow's JSON input and back. The input is validated here with the workflow's own
 * schema, so a bad flag fails before anything starts.
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { UsageError } from './usage.ts';
import { connectClient } from '../client/connection.ts';
import { connectPool } from '../storage/db/pool.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { listFindings } from '../graph/findings.ts';
import { InvalidRootError, parseRoot } from '../graph/nodes.ts';
import { formatFindings, formatProgress } from '../graph/progress.ts';
import { type WalkTotals, addTotals, emptyTotals } from '../graph/totals.ts';
import { WalkInput, type WalkInputJson } from '../graph/walk-input.ts';
import { WALK_TYPES, WALK_TYPE_NAMES } from '../graph/walks/names.ts';
import { compressionTable } from '../graph/walks/compression.ts';
import { walk, walkProgressQuery } from '../workflows/walk.ts';
import { walkSliceProgressQuery, type WalkSliceProgress } from '../workflows/walk-slice.ts';
import type { WalkProgress } from '../workflows/walk.ts';
import { controlSignals } from '../workflows/control.ts';

import { WALK_USAGE } from './help.ts';

export { WALK_USAGE };

const START_OPTIONS = {
  root: { type: 'string', multiple: true },
  'walk-root': { type: 'string', multiple: true },
  'include-node': { type: 'string', multiple: true },
  'exclude-node': { type: 'string', multiple: true },
  'include-edge': { type: 'string', multiple: true },
  'exclude-edge': { type: 'string', multiple: true },
  'sample-rate': { type: 'string' },
  'sample-offset': { type: 'string' },
  'sample-path-regex': { type: 'string' },
  slices: { type: 'string' },
  'slice-parallelism': { type: 'string' },
  'page-size': { type: 'string' },
  'scheduled-max': { type: 'string' },
  'root-concurrency': { type: 'string' },
  'error-as-data': { type: 'boolean' },
  repair: { type: 'boolean' },
  'verify-bytes': { type: 'boolean' },
  'grace-seconds': { type: 'string' },
  check: { type: 'string', multiple: true },
  'output-dir': { type: 'string' },
  'zstd-level': { type: 'string' },
  'dictionary-size': { type: 'string' },
  'train-samples': { type: 'string' },
  'tail-interval': { type: 'string' },
  'heartbeat-seconds': { type: 'string' },
  id: { type: 'string' },
  wait: { type: 'boolean' },
} as const;

const list = (v: string[] | undefined) => (v ?? []).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} expects a whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** The `walk` workflow input for `walk start`'s arguments. @throws {UsageError} naming what is wrong. */
export function walkInputFromArgs(args: string[]): { input: WalkInputJson; workflowId: string | undefined; wait: boolean } {
  const { values, positionals } = parseArgs({ args, options: START_OPTIONS, allowPositionals: true, strict: true });
  const [type, ...extra] = positionals;
  if (!type || !(WALK_TYPE_NAMES as string[]).includes(type)) throw new UsageError(`walk start takes a walk type: ${WALK_TYPE_NAMES.join(', ')}`);
  if (extra.length) throw new UsageError(`unexpected arguments ${extra.join(' ')}`);
  const roots = list([...(values.root ?? []), ...(values['walk-root'] ?? [])]);
  for (const r of roots) {
    if (r.startsWith('did:')) continue;
    try {
      parseRoot(r);
    } catch (err) {
      if (err instanceof InvalidRootError) throw new UsageError(err.message);
      throw err;
    }
  }
  const numbers: [keyof WalkInputJson, string][] = [
    ['sampleRate', 'sample-rate'],
    ['sampleOffset', 'sample-offset'],
    ['slices', 'slices'],
    ['sliceParallelism', 'slice-parallelism'],
    ['pageSize', 'page-size'],
    ['scheduledMax', 'scheduled-max'],
    ['rootConcurrency', 'root-concurrency'],
    ['graceSeconds', 'grace-seconds'],
    ['zstdLevel', 'zstd-level'],
    ['dictionarySize', 'dictionary-size'],
    ['trainSamples', 'train-samples'],
    ['tailIntervalSeconds', 'tail-interval'],
    ['heartbeatSeconds', 'heartbeat-seconds'],
  ];
  const input: Record<string, unknown> = { type };
  if (roots.length) input.roots = roots;
  for (const [key, flag] of [['includeNodes', 'include-node'], ['excludeNodes', 'exclude-node'], ['includeEdges', 'include-edge'], ['excludeEdges', 'exclude-edge'], ['checks', 'check']] as const) {
    const v = list(values[flag]);
    if (v.length) input[key] = v;
  }
  for (const [key, flag] of numbers) {
    const v = int(flag, values[flag as keyof typeof values] as string | undefined);
    if (v !== undefined) input[key] = v;
  }
  if (values['sample-path-regex'] !== undefined) input.pathRegex = values['sample-path-regex'];
  if (values['output-dir'] !== undefined) input.outputDir = resolve(values['output-dir']);
  if (values['error-as-data']) input.errorAsData = true;
  if (values.repair) input.repair = true;
  if (values['verify-bytes']) input.verifyBytes = true;
  const parsed = WalkInput.safeParse(input);
  if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`).join('; '));
  return { input: input as WalkInputJson, workflowId: values.id, wait: values.wait ?? false };
}

/** The task queue walks run on (the `walk` job's). */
export function walkTaskQueue(config: Config): string {
  return taskQueueFor(config, 'walk');
}

export async function startWalk(client: Client, config: Config, input: WalkInputJson, workflowId?: string): Promise<WorkflowHandle<typeof walk>> {
  return client.workflow.start(walk, {
    taskQueue: walkTaskQueue(config),
    workflowId: workflowId ?? `walk/${input.type}/${new Date().toISOString().replace(/[:.]/g, '-')}`,
    args: [input],
    staticSummary: `${input.type} walk${input.sampleRate && input.sampleRate > 1 ? `, sample 1/${input.sampleRate} at offset ${input.sampleOffset ?? 0}` : ''}${input.slices ? `, ${input.slices} slices` : ''}`,
  });
}

export interface LiveProgress {
  walk: WalkProgress;
  slices: WalkSliceProgress[];
  /** This pass: finished slices plus what running slices did so far. */
  totals: WalkTotals;
  /** Share done, 0..1: finished slices, plus each running slice's repos over its expected repos. */
  fraction: number;
  elapsedMs: number;
}

/** The walk's progress with its running slices' own progress added in. */
export async function liveProgress(client: Client, id: string): Promise<LiveProgress> {
  const handle = client.workflow.getHandle<typeof walk>(id);
  const [progress, desc] = await Promise.all([handle.query(walkProgressQuery), handle.describe()]);
  const slices = await Promise.all(progress.slices.running.map((sid) => client.workflow.getHandle(sid).query(walkSliceProgressQuery).catch(() => undefined)));
  const running = slices.filter((s): s is WalkSliceProgress => s !== undefined);
  const totals = addTotals(emptyTotals(), progress.totals);
  let partial = 0;
  for (const s of running) {
    addTotals(totals, s.totals);
    partial += s.expectedRepos ? Math.min(1, s.repos / s.expectedRepos) : 0;
  }
  const finished = progress.state === 'done' || progress.state === 'tailing';
  const fraction = finished ? 1 : Math.min(1, (progress.slices.done + partial) / Math.max(1, progress.slices.total));
  const end = desc.closeTime ?? new Date();
  return { walk: progress, slices: running, totals, fraction, elapsedMs: end.getTime() - desc.startTime.getTime() };
}

export function formatLive(l: LiveProgress, width = 30): string {
  const filled = Math.round(l.fraction * width);
  const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(l.fraction * 100).toFixed(0).padStart(3)}%`;
  const w = l.walk;
  const head = `${bar} ${w.state} pass ${w.pass} slices ${w.slices.done}/${w.slices.total} (${w.slices.running.length} running)`;
  return `${head}\n${formatProgress({ label: `${w.walkId} ${w.type}`, elapsedMs: l.elapsedMs, totals: l.totals, done: w.state === 'done' })}`;
}

export async function walkCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === 'help' || sub === '--help') {
    console.log(WALK_USAGE);
    return sub ? 0 : 2;
  }
  if (sub === 'findings') return findingsCommand(config, rest);
  const client = await connectClient(resolveEndpoints(config, { database: false }));
  try {
    switch (sub) {
      case 'start': {
        const { input, workflowId, wait } = walkInputFromArgs(rest);
        const handle = await startWalk(client, config, input, workflowId);
        console.log(`started ${handle.workflowId} (${input.type}: ${WALK_TYPES[input.type as keyof typeof WALK_TYPES].doc}; task queue ${walkTaskQueue(config)})`);
        if (wait) {
          await handle.result();
          console.log(formatLive(await liveProgress(client, handle.workflowId)));
        }
        return 0;
      }
      case 'status': {
        const { values, positionals } = parseArgs({ args: rest, options: { once: { type: 'boolean' } }, allowPositionals: true, strict: true });
        const id = positionals[0];
        if (!id) throw new UsageError('walk status takes a walk id');
        const live = process.stdout.isTTY && !values.once;
        for (let lines = 0; ; ) {
          const p = await liveProgress(client, id);
          const text = formatLive(p);
          if (live) {
            if (lines) process.stdout.write(`\x1b[${lines}A\x1b[J`);
            process.stdout.write(`${text}\n`);
            lines = text.split('\n').length;
          } else {
            console.log(text.replace('\n', ' | '));
          }
          const over = p.walk.state === 'done' || p.walk.state === 'cancelled';
          if (!live || over) {
            console.log(`findings: ${formatFindings(p.totals)}`);
            if (p.walk.type === 'compression-benefit') console.log(JSON.stringify(compressionTable(p.totals.counters), null, 2));
            return 0;
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      case 'pause':
      case 'resume':
      case 'cancel': {
        const id = rest[0];
        if (!id) throw new UsageError(`walk ${sub} takes a walk id`);
        await client.workflow.getHandle(id).signal(controlSignals[sub]);
        console.log(`signalled ${sub} to ${id}`);
        return 0;
      }
      case 'list': {
        let n = 0;
        for await (const wf of client.workflow.list({ query: `RepowalkKind = 'walk'` })) {
          const sa = wf.searchAttributes as Record<string, unknown[] | undefined>;
          console.log(`${wf.workflowId.padEnd(48)} ${String(sa.WalkType?.[0] ?? '').padEnd(20)} ${String(sa.RepowalkState?.[0] ?? wf.status.name).padEnd(10)} ${wf.startTime.toISOString()}`);
          if (++n >= 100) break;
        }
        if (n === 0) console.log('no walks');
        return 0;
      }
      default:
        throw new UsageError(`unknown walk command ${JSON.stringify(sub)}\n${WALK_USAGE}`);
    }
  } finally {
    await client.connection.close();
  }
}

async function findingsCommand(config: Config, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { limit: { type: 'string' } }, allowPositionals: true, strict: true });
  const id = positionals[0];
  if (!id) throw new UsageError('walk findings takes a walk id');
  const pool = await connectPool(resolveEndpoints(config).databaseUrl);
  try {
    const rows = await listFindings(pool, id, int('limit', values.limit) ?? 100);
    for (const f of rows) console.log(`${f.severity.padEnd(5)} ${f.check.padEnd(18)} ${f.nodeType}:${f.key}  ${f.detail ?? ''}\n      route: ${f.route.map((h) => (h.edge ? `-${h.edge}-> ${h.node}` : h.node)).join(' ')}`);
    if (rows.length === 0) console.log(`no findings for ${id}`);
    return 0;
  } finally {
    await pool.end();
  }
}
