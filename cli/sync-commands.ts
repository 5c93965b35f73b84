/**
 * `repowalk sync start <host> | status [host] | pause | resume | stop <host>`: thin wiring from
 * flags to the `subscribe` workflow (id `subscribe/<host>`) and back. The input is validated with
 * the workflow's own schema before anything starts.
 */
import { parseArgs } from 'node:util';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { connectClient } from '../client/connection.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { SYNC_USAGE } from './help.ts';
import { UsageError } from './usage.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import { cancelSignal, pauseSignal, progressQuery, resumeSignal, SubscribeInput, subscribe, type SubscribeProgress } from '../workflows/subscribe.ts';
import type { SyncProgress } from '../sync/progress.ts';


/** The workflow id of the subscription to `host` (its origin's host:port). */
export function subscribeId(host: string): string {
  return `subscribe/${hostOf(host)}`;
}

function hostOf(host: string): string {
  try {
    return new URL(host.includes('://') ? host : `https://${host}`).host;
  } catch {
    throw new UsageError(`not a host or origin: ${JSON.stringify(host)}`);
  }
}

function origin(host: string): string {
  return host.includes('://') ? host : `https://${host}`;
}

export async function syncCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === 'help' || sub === '--help') {
    console.log(SYNC_USAGE);
    return sub ? 0 : 2;
  }
  try {
    const client = await connectClient(resolveEndpoints(config, { database: false }));
    try {
      switch (sub) {
        case 'start':
          return await start(client, config, rest);
        case 'status':
          return await status(client, rest);
        case 'pause':
        case 'resume':
        case 'stop': {
          const host = rest[0];
          if (!host) throw new UsageError(`sync ${sub} takes a host`);
          const handle = client.workflow.getHandle<typeof subscribe>(subscribeId(host));
          await handle.signal(sub === 'pause' ? pauseSignal : sub === 'resume' ? resumeSignal : cancelSignal);
          console.log(`${sub === 'stop' ? 'stopping' : sub === 'pause' ? 'pausing' : 'resuming'} ${handle.workflowId}`);
          return 0;
        }
        default:
          throw new UsageError(`unknown sync command ${JSON.stringify(sub)}`);
      }
    } finally {
      await client.connection.close();
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${err.message}\n${SYNC_USAGE}`);
      return 2;
    }
    throw err;
  }
}

async function start(client: Client, config: Config, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      'run-seconds': { type: 'string' },
      'max-batch': { type: 'string' },
      blobs: { type: 'boolean' },
      'filter-include': { type: 'string', multiple: true },
      'filter-exclude': { type: 'string', multiple: true },
      'filter-signal': { type: 'string', multiple: true },
    },
    allowPositionals: true,
    strict: true,
  });
  const host = positionals[0];
  if (!host) throw new UsageError('sync start takes a host');
  const filtered = (values['filter-include'] ?? values['filter-exclude'] ?? values['filter-signal']) !== undefined;
  const settings = BackfillSettings.safeParse({
    blobs: values.blobs ?? false,
    filter: filtered ? { mode: 'filter', include: values['filter-include'] ?? [], exclude: values['filter-exclude'] ?? [], signal: values['filter-signal'] ?? [] } : undefined,
  });
  if (!settings.success) throw new UsageError(settings.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  const num = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) throw new UsageError(`--${name} expects a whole number, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const input = SubscribeInput.safeParse({
    host: origin(host),
    settings: settings.data,
    backfillTaskQueue: taskQueueFor(config, 'backfill'),
    runForSeconds: num(values['run-seconds'], 'run-seconds'),
    maxBatch: num(values['max-batch'], 'max-batch'),
  });
  if (!input.success) throw new UsageError(input.error.issues.map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`).join('; '));
  try {
    const handle = await client.workflow.start(subscribe, {
      workflowId: subscribeId(host),
      taskQueue: taskQueueFor(config, 'sync'),
      args: [input.data],
      staticSummary: `live sync from ${origin(host)}`,
    });
    console.log(`started ${handle.workflowId} (task queue ${taskQueueFor(config, 'sync')}; gaps resync on ${taskQueueFor(config, 'backfill')})`);
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    console.log(`${subscribeId(host)} is already running`);
  }
  return 0;
}

/** The workflow's totals, with the running activity's last heartbeat for live figures. */
async function live(client: Client, id: string): Promise<{ progress: SubscribeProgress; run: SyncProgress | undefined }> {
  const handle = client.workflow.getHandle<typeof subscribe>(id);
  const [progress, described] = await Promise.all([handle.query(progressQuery), handle.describe()]);
  const raw = (described.raw.pendingActivities ?? [])[0]?.heartbeatDetails?.payloads?.[0]?.data;
  const run = raw ? (JSON.parse(Buffer.from(raw).toString('utf8')) as SyncProgress) : undefined;
  return { progress, run };
}

export function formatSync(p: SubscribeProgress, run: SyncProgress | undefined): string {
  const sum = (a: Record<string, number>, b: Record<string, number> | undefined) => {
    const out = { ...a };
    for (const [k, n] of Object.entries(b ?? {})) out[k] = (out[k] ?? 0) + n;
    return out;
  };
  const frames = sum(p.totals.frames, run?.frames);
  const outcomes = sum(p.totals.outcomes, run?.outcomes);
  const cursor = run?.cursor ?? p.last?.cursor;
  const rate = run?.eventsPerSecond ?? p.last?.eventsPerSecond ?? 0;
  const lag = run?.lagMs ?? p.last?.lagMs;
  const fmt = (r: Record<string, number>) => Object.entries(r).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  return (
    `${p.host} ${p.state}${run?.connected ? ' (connected)' : ''}: cursor ${cursor ?? '–'}, ${rate} events/s, lag ${lag === undefined ? '–' : `${(lag / 1000).toFixed(1)} s`}, ` +
    `resyncs ${p.totals.resyncs + (run?.resyncs ?? 0)}, errors ${p.totals.errors + (run?.errors ?? 0)}\n  frames: ${fmt(frames)}\n  outcomes: ${fmt(outcomes)}`
  );
}

async function status(client: Client, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { once: { type: 'boolean' } }, allowPositionals: true, strict: true });
  let ids = positionals.map(subscribeId);
  if (ids.length === 0) {
    ids = [];
    for await (const w of client.workflow.list({ query: `RepowalkKind = 'subscribe' AND ExecutionStatus = 'Running'` })) ids.push(w.workflowId);
    if (ids.length === 0) {
      console.log('no subscription is running');
      return 0;
    }
  }
  const tty = process.stdout.isTTY && !values.once && ids.length === 1;
  for (let lines = 0; ; ) {
    const texts = [];
    for (const id of ids) {
      const { progress, run } = await live(client, id);
      texts.push(formatSync(progress, run));
    }
    const text = texts.join('\n');
    if (!tty) {
      console.log(text);
      return 0;
    }
    if (lines) process.stdout.write(`\x1b[${lines}A\x1b[J`);
    process.stdout.write(`${text}\n`);
    lines = text.split('\n').length;
    await new Promise((r) => setTimeout(r, 2000));
  }
}
