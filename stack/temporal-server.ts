/**
 * The Temporal dev server (`temporal server start-dev`), with history persisted in a SQLite
 * file and repowalk's search attributes registered at start.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';
import { spawnLogged, waitFor } from './process.ts';
import { freePort } from '../config/free-port.ts';

export interface TemporalServerOptions {
  bin: string;
  /** Directory holding `temporal.db` and `temporal.log`. */
  dir: string;
  port?: number;
  uiPort?: number;
  ui?: boolean;
  namespace?: string;
}

export interface TemporalServer {
  address: string;
  uiUrl: string | undefined;
  namespace: string;
  stop(): Promise<void>;
}

export async function startTemporalServer(opts: TemporalServerOptions): Promise<TemporalServer> {
  await mkdir(opts.dir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const ui = opts.ui ?? true;
  const uiPort = opts.uiPort ?? (await freePort());
  const namespace = opts.namespace ?? 'default';
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(port),
    '--db-filename', join(opts.dir, 'temporal.db'),
    '--namespace', namespace,
    '--log-level', 'warn',
    // Visibility queries in tests want fresh results; the default refresh is already near-instant on SQLite.
    ...Object.entries(SEARCH_ATTRIBUTES).flatMap(([k, t]) => ['--search-attribute', `${k}=${t}`]),
    ...(ui ? ['--ui-port', String(uiPort)] : ['--headless']),
  ];
  const logFile = join(opts.dir, 'temporal.log');
  const child = spawnLogged('temporal', opts.bin, args, { logFile });
  const address = `127.0.0.1:${port}`;
  try {
    await waitFor(`Temporal dev server on ${address}`, async () => {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        const attrs = await conn.operatorService.listSearchAttributes({ namespace });
        return Object.keys(SEARCH_ATTRIBUTES).every((k) => k in (attrs.customAttributes ?? {}));
      } finally {
        await conn.close();
      }
    }, 90_000, child, logFile);
  } catch (err) {
    await child.stop();
    throw err;
  }
  return { address, uiUrl: ui ? `http://127.0.0.1:${uiPort}` : undefined, namespace, stop: () => child.stop(15_000) };
}
