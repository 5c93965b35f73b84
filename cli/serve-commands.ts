/**
 * `repowalk serve`: the serve server (workers/serve-service.ts) until SIGINT/SIGTERM.
 *
 *   repowalk serve [--host H] [--port P]
 */
import { parseArgs } from 'node:util';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { openStores } from '../workers/stores.ts';
import type { ServeServer } from '../serve/server.ts';
import { startServeService } from '../workers/serve-service.ts';
import { UsageError } from './usage.ts';

export async function serveCommand(config: Config, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { host: { type: 'string' }, port: { type: 'string' } }, strict: true });
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new UsageError(`--port ${JSON.stringify(values.port)}: expected a port number from 0 to 65535`);
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
