/**
 * `repowalk serve`, and the wiring the `serve` job shares with it: configuration to the serve
 * server, and its admin endpoints to backfill workflows through a Temporal client (serve/
 * itself knows nothing of Temporal).
 *
 *   repowalk serve [--host H] [--port P]   serve the mirror until SIGINT/SIGTERM
 */
import { parseArgs } from 'node:util';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { connectClient } from '../client/connection.ts';
import { openStores, type Stores } from '../workers/stores.ts';
import { taskQueueFor } from '../workers/jobs.ts';
import { dropRepo } from '../backfill/import.ts';
import { startServeServer, type ServeServer } from '../serve/server.ts';
import type { AdminActions } from '../serve/admin.ts';
import { startBackfill } from './backfill-commands.ts';

/** Admin actions as backfill workflows: add starts a bulk backfill, resync one per repo. */
export function backfillAdminActions(config: Config, stores: Stores): AdminActions & { close(): Promise<void> } {
  let client: Promise<Client> | undefined;
  const temporal = () => (client ??= connectClient(resolveEndpoints(config, { database: false })));
  return {
    async addRepos(dids) {
      await startBackfill(await temporal(), config, { source: { kind: 'dids', dids }, settings: config.maintenance.resyncSettings });
    },
    async resyncRepos(dids) {
      const c = await temporal();
      for (const did of dids) {
        const handle = c.workflow.getHandle(`backfill/${did}`);
        try {
          if ((await handle.describe()).status.name === 'RUNNING') {
            await handle.signal('resyncNow');
            continue;
          }
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
        await c.workflow.start('backfillRepo', {
          taskQueue: taskQueueFor(config, 'backfill'),
          workflowId: `backfill/${did}`,
          args: [{ did, settings: config.maintenance.resyncSettings }],
          staticSummary: `backfill of ${did}, resynced through the serve admin API`,
        });
      }
    },
    async removeRepos(dids) {
      for (const did of dids) await dropRepo(stores.pool, did, 'dropped', { reason: 'removed through the serve admin API' });
    },
    async close() {
      if (client) await (await client).connection.close();
    },
  };
}

/** The serve server on the configured address, with admin wired to backfills. */
export async function startServeService(config: Config, stores: Stores, overrides: { host?: string; port?: number } = {}): Promise<ServeServer> {
  const admin = backfillAdminActions(config, stores);
  const server = await startServeServer({
    pool: stores.pool,
    store: stores.blobs,
    host: overrides.host ?? config.serve.host,
    port: overrides.port ?? config.serve.port,
    ...(config.serve.adminToken ? { adminToken: config.serve.adminToken } : {}),
    admin,
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

export async function serveCommand(config: Config, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { host: { type: 'string' }, port: { type: 'string' } }, strict: true });
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw Object.assign(new Error(`--port ${JSON.stringify(values.port)}: expected a port number from 0 to 65535`), { name: 'UsageError' });
  }
  const stores = await openStores(config, resolveEndpoints(config));
  let server: ServeServer;
  try {
    server = await startServeService(config, stores, { ...(values.host ? { host: values.host } : {}), ...(port !== undefined ? { port } : {}) });
  } catch (err) {
    await stores.close();
    throw err;
  }
  console.log(`serving the mirror on ${server.url}: XRPC at ${server.url}/xrpc/…, tap event stream at ${server.url.replace(/^http/, 'ws')}/channel, admin ${config.serve.adminToken ? 'on' : 'off (no REPOWALK_SERVE_ADMIN_TOKEN)'}, metrics at ${server.url}/metrics`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  await stores.close();
  return 0;
}
