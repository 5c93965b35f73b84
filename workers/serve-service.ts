/**
 * The serve server as the `serve` job and `repowalk serve` run it: configuration to the server,
 * its admin endpoints to backfill workflows through a Temporal client (serve/ itself knows
 * nothing of Temporal), and its metrics into the process registry the worker's `/metrics` serves.
 */
import { Client, Connection } from '@temporalio/client';
import type { Metric } from 'prom-client';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import type { Stores } from '../activities/context.ts';
import { processRegistry } from '../activities/counters.ts';
import { startServeServer, type ServeServer } from '../serve/server.ts';
import type { AdminActions } from '../serve/admin.ts';
import { serveRegistry } from '../serve/metrics.ts';
import { backfill } from '../workflows/backfill.ts';
import { startBackfillRepo } from '../client/backfill-repo.ts';

/** Adds the serve metrics to the process registry, once. */
function exportServeMetrics(): void {
  for (const metric of serveRegistry.getMetricsAsArray()) {
    // getMetricsAsArray hands back the metric objects themselves, typed as their plain shape.
    if (!processRegistry.getSingleMetric(metric.name)) processRegistry.registerMetric(metric as unknown as Metric);
  }
}

/** Admin actions as backfill workflows: add starts a bulk backfill, resync one per repo. */
export function backfillAdminActions(config: Config): Pick<AdminActions, 'addRepos' | 'resyncRepos'> & { close(): Promise<void> } {
  let client: Promise<Client> | undefined;
  const temporal = () =>
    (client ??= (async () => {
      const endpoints = resolveEndpoints(config, { database: false });
      return new Client({ connection: await Connection.connect({ address: endpoints.temporalAddress, connectTimeout: 5_000 }), namespace: endpoints.namespace });
    })());
  return {
    async addRepos(dids) {
      await (await temporal()).workflow.start(backfill, {
        taskQueue: taskQueueFor(config, 'backfill'),
        workflowId: `backfill-bulk/serve-${new Date().toISOString().replace(/[:.]/g, '-')}`,
        args: [{ source: { kind: 'dids', dids }, settings: config.maintenance.resyncSettings }],
        staticSummary: `backfill of ${dids.length} DIDs, added through the serve admin API`,
      });
    },
    async resyncRepos(dids) {
      const c = await temporal();
      for (const did of dids) {
        await startBackfillRepo(c, {
          did,
          settings: config.maintenance.resyncSettings,
          taskQueue: taskQueueFor(config, 'backfill'),
          reason: `backfill of ${did}, resynced through the serve admin API`,
          ifRunning: 'resync-now',
        });
      }
    },
    async close() {
      if (client) await (await client).connection.close();
    },
  };
}

/** The serve server on the configured address, with admin wired to backfills. */
export async function startServeService(config: Config, stores: Stores, overrides: { host?: string; port?: number } = {}): Promise<ServeServer> {
  exportServeMetrics();
  const admin = backfillAdminActions(config);
  const server = await startServeServer({
    pool: stores.pool,
    store: stores.blobs,
    host: overrides.host ?? config.serve.host,
    port: overrides.port ?? config.serve.port,
    ...(config.serve.adminToken ? { adminToken: config.serve.adminToken } : {}),
    admin,
    metrics: processRegistry,
    limits: { maxConcurrentRepos: config.serve.maxConcurrentRepos },
    stream: { highWaterBytes: config.serve.streamBufferBytes, stallTimeoutMs: config.serve.stallSeconds * 1000 },
  });
  return {
    ...server,
    async close() {
      await server.close();
      await admin.close();
    },
  };
}
