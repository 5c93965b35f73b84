/**
 * repowalk's Prometheus metrics, and the Temporal SDK's beside them on one `/metrics`.
 *
 * Counters (imports, walk nodes, findings) live in one process-wide registry: activities count
 * what they did with `recordImport` and `recordWalkTotals`, whether or not this process serves
 * metrics. Gauges of stored state (repos by status, the heal queue) are read from PostgreSQL
 * when scraped, at most once per `cacheMs` and one query at a time, so that several scrapers
 * cost one query. The SDK's own metrics come from its Prometheus exporter, which the worker
 * binds to a loopback port (`Runtime.install`); its text is appended after ours.
 *
 * Every name is documented in README.md ("Operating").
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type pg from 'pg';
import type { RepoOutcome } from '../backfill/settings.ts';
import type { WalkTotals } from '../graph/totals.ts';

/** Counters every activity in this process adds to, and Node's process metrics. */
export const processRegistry = new Registry();
let defaultMetricsOn = false;

const imports = new Counter({
  name: 'repowalk_imports_total',
  help: 'Repo import attempts by outcome (imported, skipped, gone, deleted, dropped, retry); retries by resync kind.',
  labelNames: ['outcome', 'resync'] as const,
  registers: [processRegistry],
});
const importedBlocks = new Counter({
  name: 'repowalk_import_new_blocks_total',
  help: 'Blocks stored by imports (new to the mirror).',
  registers: [processRegistry],
});
const importedPackBytes = new Counter({
  name: 'repowalk_import_pack_bytes_total',
  help: 'Bytes of packs written by imports.',
  registers: [processRegistry],
});
const walkNodes = new Counter({
  name: 'repowalk_walk_nodes_total',
  help: 'Nodes a walk stepped, by walk type and node type.',
  labelNames: ['walk_type', 'node_type'] as const,
  registers: [processRegistry],
});
const walkFindings = new Counter({
  name: 'repowalk_walk_findings_total',
  help: 'Findings walks recorded, by walk type, check and severity.',
  labelNames: ['walk_type', 'check', 'severity'] as const,
  registers: [processRegistry],
});

/** Counts one import attempt (`backfillRepoOnce`, each repo of `backfillMany`). */
export function recordImport(outcome: Pick<RepoOutcome, 'kind'> & { resync?: string; newBlocks?: number; packBytes?: number }): void {
  imports.inc(outcome.kind === 'retry' && outcome.resync ? { outcome: outcome.kind, resync: outcome.resync } : { outcome: outcome.kind });
  if (outcome.kind === 'imported') {
    importedBlocks.inc(outcome.newBlocks ?? 0);
    importedPackBytes.inc(outcome.packBytes ?? 0);
  }
}

/** Counts nodes a walk stepped. */
export function recordWalkNodes(walkType: string, nodeType: string, count = 1): void {
  if (count > 0) walkNodes.inc({ walk_type: walkType, node_type: nodeType }, count);
}

/** Counts findings a walk recorded. */
export function recordWalkFindings(walkType: string, check: string, severity: string, count = 1): void {
  if (count > 0) walkFindings.inc({ walk_type: walkType, check, severity }, count);
}

/**
 * Counts what one page of a walk did: its nodes by type and its findings (`check:severity`
 * keys). Pass only what this attempt walked, not totals carried over from a heartbeat, or a
 * resumed page is counted twice.
 */
export function recordWalkTotals(walkType: string, totals: Pick<WalkTotals, 'types' | 'findings'>): void {
  for (const [nodeType, t] of Object.entries(totals.types)) if (t) recordWalkNodes(walkType, nodeType, t.walked);
  for (const [key, n] of Object.entries(totals.findings)) {
    const at = key.lastIndexOf(':');
    recordWalkFindings(walkType, at < 0 ? key : key.slice(0, at), at < 0 ? 'error' : key.slice(at + 1), n);
  }
}

/** Every repo status the schema allows: each is exported, 0 when no repo has it. */
const REPO_STATUSES = ['pending', 'active', 'gone', 'deleted', 'error', 'dropped'] as const;
const RESYNC_KINDS = ['rate-limited', 'transport', 'error'] as const;

export interface StoreGaugeOptions {
  pool: pg.Pool;
  /** How long one reading of PostgreSQL serves scrapes. */
  cacheMs?: number;
}

interface StoreReading {
  byStatus: Map<string, number>;
  byResync: Map<string, number>;
  healOpen: number;
}

/** Gauges of stored state, read from PostgreSQL on scrape (cached). */
export function storeGauges({ pool, cacheMs = 10_000 }: StoreGaugeOptions): Registry {
  const registry = new Registry();
  let reading: StoreReading | undefined;
  let readAt = -Infinity;
  let inFlight: Promise<StoreReading | undefined> | undefined;
  const readErrors = new Counter({
    name: 'repowalk_metrics_read_errors_total',
    help: 'Scrapes whose PostgreSQL reading failed (the gauges then keep their last values).',
    registers: [registry],
  });

  async function read(): Promise<StoreReading | undefined> {
    if (performance.now() - readAt < cacheMs) return reading;
    inFlight ??= (async () => {
      try {
        const client = await pool.connect();
        let failed: unknown;
        try {
          // A scrape must not queue behind a slow count: give up and keep the last values.
          await client.query('BEGIN READ ONLY');
          await client.query("SET LOCAL statement_timeout = '5s'");
          const repos = await client.query<{ status: string; resync_kind: string | null; n: string }>(
            'SELECT status, resync_kind, count(*) AS n FROM repos GROUP BY status, resync_kind',
          );
          const heal = await client.query<{ n: string }>('SELECT count(*) AS n FROM heal_queue WHERE healed_at IS NULL');
          await client.query('COMMIT');
          const next: StoreReading = { byStatus: new Map(), byResync: new Map(), healOpen: Number(heal.rows[0]?.n ?? 0) };
          for (const r of repos.rows) {
            next.byStatus.set(r.status, (next.byStatus.get(r.status) ?? 0) + Number(r.n));
            if (r.resync_kind) next.byResync.set(r.resync_kind, (next.byResync.get(r.resync_kind) ?? 0) + Number(r.n));
          }
          reading = next;
          readAt = performance.now();
        } catch (err) {
          failed = err;
          throw err;
        } finally {
          // A connection left mid-transaction is not given back to the pool.
          client.release(failed !== undefined);
        }
      } catch {
        readErrors.inc();
      } finally {
        inFlight = undefined;
      }
      return reading;
    })();
    return inFlight;
  }

  new Gauge({
    name: 'repowalk_repos',
    help: 'Repos in the mirror by status (pending, active, gone, deleted, error, dropped).',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const r = await read();
      if (!r) return;
      for (const status of new Set([...REPO_STATUSES, ...r.byStatus.keys()])) this.set({ status }, r.byStatus.get(status) ?? 0);
    },
  });
  new Gauge({
    name: 'repowalk_repos_resync',
    help: 'Repos waiting for a retry, by the kind of their last failure (rate-limited, transport, error).',
    labelNames: ['kind'] as const,
    registers: [registry],
    async collect() {
      const r = await read();
      if (!r) return;
      for (const kind of new Set([...RESYNC_KINDS, ...r.byResync.keys()])) this.set({ kind }, r.byResync.get(kind) ?? 0);
    },
  });
  new Gauge({
    name: 'repowalk_heal_queue_length',
    help: 'Open heal queue entries: blobstore components that miss a copy or hold a bad one.',
    registers: [registry],
    async collect() {
      const r = await read();
      if (r) this.set(r.healOpen);
    },
  });
  return registry;
}

export interface Metrics {
  contentType: string;
  /** The exposition text: repowalk's metrics, then the Temporal SDK's. */
  text(): Promise<string>;
}

/**
 * What `/metrics` serves: this process's counters, the stored-state gauges, Node's process
 * metrics, and the text of the SDK's exporter at `sdkMetricsUrl` (when the runtime has one).
 */
export function workerMetrics(opts: { pool: pg.Pool; sdkMetricsUrl: string | undefined; cacheMs?: number }): Metrics {
  if (!defaultMetricsOn) {
    defaultMetricsOn = true;
    collectDefaultMetrics({ register: processRegistry });
  }
  const gauges = storeGauges({ pool: opts.pool, ...(opts.cacheMs !== undefined ? { cacheMs: opts.cacheMs } : {}) });
  return {
    contentType: processRegistry.contentType,
    async text() {
      const [ours, stored, sdk] = await Promise.all([processRegistry.metrics(), gauges.metrics(), sdkMetricsText(opts.sdkMetricsUrl)]);
      return `${ours}\n${stored}\n${sdk}`;
    },
  };
}

/** The SDK exporter's text, or a comment saying why there is none (a scrape never fails on it). */
async function sdkMetricsText(url: string | undefined): Promise<string> {
  if (!url) return '# Temporal SDK metrics: not exported by this process\n';
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) return `# Temporal SDK metrics: ${url} answered ${res.status}\n`;
    return await res.text();
  } catch (err) {
    return `# Temporal SDK metrics: ${url} unreachable: ${(err as Error).message.replace(/\s+/g, ' ')}\n`;
  }
}
