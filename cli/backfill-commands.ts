/**
 * `repowalk backfill add <did…> | --pds URL | --file PATH`, `backfill status [did]`,
 * `backfill resync <did>`: thin wiring from flags to workflow input and back.
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { UsageError } from './usage.ts';
import { connectClient } from '../client/connection.ts';
import { connectPool } from '../storage/db/pool.ts';
import { getRepoRow } from '../backfill/repo-state.ts';
import { BackfillSettings, Did, type BackfillSettingsInput } from '../backfill/settings.ts';
import { didProblem, showDid } from '../atproto/net/did.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { backfill, backfillProgressQuery, type BackfillInput, type BackfillProgress } from '../workflows/backfill.ts';
import { backfillRepo, backfillRepoStateQuery, resyncNowSignal } from '../workflows/backfill-repo.ts';

const ADD_OPTIONS = {
  pds: { type: 'string' },
  file: { type: 'string' },
  mode: { type: 'string' },
  include: { type: 'string', multiple: true },
  exclude: { type: 'string', multiple: true },
  signal: { type: 'string', multiple: true },
  ephemeral: { type: 'string' },
  blobs: { type: 'boolean' },
  'page-size': { type: 'string' },
  concurrency: { type: 'string' },
  'pages-in-flight': { type: 'string' },
  wait: { type: 'boolean' },
  id: { type: 'string' },
} as const;

/** Workflow input for `backfill add`, from its arguments; throws UsageError naming what is wrong. */
export function backfillInputFromArgs(args: string[]): { input: BackfillInput; wait: boolean; workflowId: string | undefined } {
  const { values, positionals } = parseArgs({ args, options: ADD_OPTIONS, allowPositionals: true, strict: true });
  const sources = [positionals.length > 0, values.pds !== undefined, values.file !== undefined].filter(Boolean).length;
  if (sources !== 1) throw new UsageError('backfill add takes exactly one source: DIDs, --pds URL, or --file PATH');
  for (const d of positionals) {
    const problem = didProblem(d);
    if (problem !== undefined) throw new UsageError(`not a did:plc or did:web DID: ${showDid(d)} (${problem})`);
  }
  const settingsInput: BackfillSettingsInput = {
    filter: { mode: (values.mode ?? (values.include || values.exclude || values.signal ? 'filter' : 'full')) as 'full' | 'filter', include: values.include ?? [], exclude: values.exclude ?? [], signal: values.signal ?? [] },
    blobs: values.blobs ?? false,
    ...(values.ephemeral ? { ephemeralRetentionSeconds: Number(values.ephemeral) } : {}),
  };
  const parsed = BackfillSettings.safeParse(settingsInput);
  if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  const input: BackfillInput = {
    source: positionals.length > 0 ? { kind: 'dids', dids: positionals } : values.pds ? { kind: 'pds', url: values.pds } : { kind: 'file', path: resolve(values.file!) },
    settings: parsed.data,
    ...(values['page-size'] ? { pageSize: Number(values['page-size']) } : {}),
    ...(values.concurrency ? { concurrency: Number(values.concurrency) } : {}),
    ...(values['pages-in-flight'] ? { pagesInFlight: Number(values['pages-in-flight']) } : {}),
  };
  return { input, wait: values.wait ?? false, workflowId: values.id };
}

export async function startBackfill(client: Client, config: Config, input: BackfillInput, workflowId?: string) {
  return client.workflow.start(backfill, {
    taskQueue: taskQueueFor(config, 'backfill'),
    workflowId: workflowId ?? `backfill-bulk/${new Date().toISOString().replace(/[:.]/g, '-')}`,
    args: [input],
    staticSummary: `backfill of ${input.source.kind === 'dids' ? `${input.source.dids.length} DIDs` : input.source.kind === 'file' ? `the DIDs in ${input.source.path}` : `every repo on ${input.source.url}`}`,
  });
}

export async function backfillCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  // Arguments are checked before any server is contacted: a typo is reported as a typo, also
  // when Temporal or the database is down.
  if (sub !== 'add' && sub !== 'status' && sub !== 'resync') throw new UsageError(`unknown backfill command ${JSON.stringify(sub ?? '')}; expected add, status or resync`);
  const add = sub === 'add' ? backfillInputFromArgs(rest) : undefined;
  if (sub === 'resync' && !(rest[0] && Did.safeParse(rest[0]).success)) throw new UsageError('backfill resync takes one did:plc or did:web DID');
  const endpoints = resolveEndpoints(config, { database: sub === 'status' });
  const client = await connectClient(endpoints);
  try {
    switch (sub) {
      case 'add': {
        const { input, wait, workflowId } = add!;
        const handle = await startBackfill(client, config, input, workflowId);
        console.log(`started ${handle.workflowId} (task queue ${taskQueueFor(config, 'backfill')})`);
        if (wait) {
          const total = input.source.kind === 'dids' ? input.source.dids.length : undefined;
          const final = await followBackfill(
            { result: () => handle.result(), progress: () => client.withDeadline(Date.now() + 5_000, () => handle.query(backfillProgressQuery)) },
            { total, write: (s) => process.stdout.write(s), tty: process.stdout.isTTY === true },
          );
          console.log(formatProgress(final));
        }
        return 0;
      }
      case 'resync': {
        const did = rest[0]!;
        const handle = client.workflow.getHandle(`backfill/${did}`);
        try {
          const desc = await handle.describe();
          if (desc.status.name === 'RUNNING') {
            await handle.signal(resyncNowSignal);
            console.log(`signalled backfill/${did} to retry now`);
            return 0;
          }
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
        await client.workflow.start(backfillRepo, { taskQueue: taskQueueFor(config, 'backfill'), workflowId: `backfill/${did}`, args: [{ did }], staticSummary: `backfill of ${did}, resynced by hand` });
        console.log(`started backfill/${did}`);
        return 0;
      }
      case 'status': {
        const pool = await connectPool(endpoints.databaseUrl);
        try {
          const did = rest[0];
          if (did) {
            const row = await getRepoRow(pool, did);
            console.log(row ? JSON.stringify(row, null, 2) : `${did} is not in the mirror`);
            const line = await workflowLine(client, did);
            if (line) console.log(line);
            return row ? 0 : 1;
          }
          const { rows } = await pool.query<{ status: string; n: string; records: string }>(
            'SELECT status, count(*) AS n, sum(records_count) AS records FROM repos GROUP BY status ORDER BY status',
          );
          for (const r of rows) console.log(`${r.status.padEnd(10)} ${String(r.n).padStart(8)} repos ${String(r.records ?? 0).padStart(10)} records`);
          if (rows.length === 0) console.log('no repos yet');
          return 0;
        } finally {
          await pool.end();
        }
      }
    }
  } finally {
    await client.connection.close();
  }
}

/**
 * One line on `backfill/<did>`, or undefined when there is no such workflow. The state query
 * needs a worker to answer it, and without one the server holds it until its own timeout (30 s):
 * it gets a few seconds, then the line falls back on what the server keeps by itself (status
 * and search attributes).
 */
async function workflowLine(client: Client, did: string): Promise<string | undefined> {
  const handle = client.workflow.getHandle<typeof backfillRepo>(`backfill/${did}`);
  let desc: Awaited<ReturnType<typeof handle.describe>>;
  try {
    desc = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
  try {
    const state = await client.withDeadline(Date.now() + 5_000, () => handle.query(backfillRepoStateQuery));
    return `workflow backfill/${did}: ${state.state}, retry ${state.retryCount}${state.nextRetryAt ? `, next at ${state.nextRetryAt}` : ''}`;
  } catch {
    const attrs = desc.searchAttributes as Record<string, unknown[] | undefined>;
    const state = attrs.RepowalkState?.[0] ?? desc.status.name.toLowerCase();
    return `workflow backfill/${did}: ${String(state)}, retry ${String(attrs.RepowalkRetryCount?.[0] ?? 0)} (${desc.status.name.toLowerCase()}; no worker answered the state query)`;
  }
}

export function formatProgress(p: BackfillProgress): string {
  const t = p.totals;
  return `${p.state}: ${t.repos} repos (${t.imported} imported, ${t.skipped} unchanged, ${t.failed} failed → resync, ${t.gone} gone, ${t.deleted} deleted, ${t.dropped} dropped), ${t.records} records, ${t.blocks} new blocks, ${t.bytes} bytes${t.invalidListed ? `; ${t.invalidListed} bad listing entries skipped` : ''}`;
}

/** What `followBackfill` needs of a running bulk backfill. */
export interface FollowedBackfill {
  result(): Promise<BackfillProgress>;
  /** Its progress query; may fail (no worker answering yet), and the line waits for the next. */
  progress(): Promise<BackfillProgress>;
}

export interface FollowOptions {
  /** Repos in the source when known (a list of DIDs); a file or a listing has no total up front. */
  total: number | undefined;
  write: (text: string) => void;
  /** On a terminal the line is redrawn in place; otherwise a line is printed when it changes. */
  tty: boolean;
  intervalMs?: number;
  now?: () => number;
}

/**
 * Waits for a bulk backfill to end, showing a live line (repos done of total, records/s,
 * failures) as `walk status` does: redrawn every `intervalMs` on a terminal, printed when the
 * counts changed otherwise. Resolves to the final progress.
 */
export async function followBackfill(run: FollowedBackfill, opts: FollowOptions): Promise<BackfillProgress> {
  const now = opts.now ?? Date.now;
  const started = now();
  const interval = opts.intervalMs ?? 1000;
  let last = '';
  let outcome: { value: BackfillProgress } | { error: unknown } | undefined;
  const done = run.result().then(
    (value) => void (outcome = { value }),
    (error: unknown) => void (outcome = { error }),
  );
  for (let first = true; outcome === undefined; first = false) {
    // The first line at once, so that even a short run shows one.
    if (!first) await Promise.race([done, new Promise((r) => setTimeout(r, interval))]);
    if (outcome !== undefined) break;
    const p = await run.progress().catch(() => undefined);
    if (p === undefined) continue;
    const line = formatLiveLine(p, opts.total, now() - started);
    // Off a terminal (a log), a new line only when the counts moved, not every second.
    const key = JSON.stringify([p.state, p.totals]);
    if (opts.tty) opts.write(`\r\x1b[K${line}`);
    else if (key !== last) opts.write(`${line}\n`);
    last = key;
  }
  if (opts.tty && last !== '') opts.write('\r\x1b[K');
  if ('error' in outcome) throw outcome.error;
  return outcome.value;
}

/** The live line: `running: 120/2000 repos (6 %), 35.2 records/s, 3 failed → resync, 1 gone, 12 s`. */
export function formatLiveLine(p: BackfillProgress, total: number | undefined, elapsedMs: number): string {
  const t = p.totals;
  const of = total === undefined ? `${t.repos} repos` : `${t.repos}/${total} repos (${Math.floor((100 * t.repos) / Math.max(1, total))} %)`;
  const rate = elapsedMs > 0 ? (t.records * 1000) / elapsedMs : 0;
  const extra = [t.gone ? `${t.gone} gone` : '', t.deleted ? `${t.deleted} deleted` : '', t.invalidListed ? `${t.invalidListed} bad listing entries` : ''].filter(Boolean);
  return `${p.state}: ${of}, ${rate.toFixed(1)} records/s, ${t.failed} failed → resync${extra.length ? `, ${extra.join(', ')}` : ''}, ${Math.round(elapsedMs / 1000)} s`;
}
