/**
 * repowalk's Prometheus metrics, and the Temporal SDK's beside them on one `/metrics`.
 *
 * Counters (imports, walk nodes, findings) live in one process-wide registry that activities own
 * (`activities/counters.ts`): they count what they did whether or not this process serves
 * metrics. Gauges of stored state (repos by status, the heal queue) are read from PostgreSQL
 * when scraped, at most once per `cacheMs` and one query at a time, so that several scrapers
 * cost one query. The SDK's own metrics come from its Prometheus exporter, which the worker
 * binds to a loopback port (`Runtime.install`); its text is appended after ours.
 *
 * Every name is documented in README.md ("Operating").
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type pg from 'pg';
import { processRegistry } from '../activities/counters.ts';

export { recordImport, recordWalkFindings, recordWalkNodes, recordWalkTotals } from '../activities/counters.ts';

let defaultMetricsOn = false;

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
