/**
 * The real Temporal server (v1.29.1, all four services in one process) on PostgreSQL: the
 * stack's `REPOWALK_TEMPORAL=server` mode, production's persistence run locally. History and
 * SQL visibility live in their own databases (`temporal`, `temporal_visibility`) of the stack's
 * PostgreSQL, created and migrated by temporal-sql-tool from the schemas it embeds; the server
 * reads a config generated into `<dir>/config/repowalk.yaml`; the namespace and repowalk's search
 * attributes are registered through the API; the Web UI is the standalone ui-server.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { Connection } from '@temporalio/client';
import { freePort } from '../config/free-port.ts';
import { spawnLogged, waitFor, type Child } from './process.ts';
import { prepareNamespace } from './temporal-namespace.ts';
import type { TemporalServer } from './temporal-server.ts';

const run = promisify(execFile);

export interface TemporalClusterOptions {
  bins: { server: string; sqlTool: string; ui?: string | undefined };
  /** Directory of the generated config and the logs. */
  dir: string;
  /** A PostgreSQL superuser URL; the server's two databases are made beside the one it names. */
  postgresUrl: string;
  port?: number;
  uiPort?: number;
  ui?: boolean;
  namespace?: string;
  /**
   * History shards: fixed when the databases are first set up. More than one, so that what runs
   * here is what a cluster runs (workflows spread over shards, per-shard task queues). Default 4.
   */
  historyShards?: number;
  log?: (line: string) => void;
}

export const TEMPORAL_DATABASES = { history: 'temporal', visibility: 'temporal_visibility' } as const;

interface PgTarget {
  host: string;
  port: number;
  user: string;
  password: string;
}

function pgTarget(url: string): PgTarget {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
}

/**
 * Creates (when missing) and migrates one of the server's databases with temporal-sql-tool:
 * `create-database`, `setup-schema -v 0.0` on a fresh one, then `update-schema` to the newest
 * version the tool embeds. Re-running on an up-to-date database changes nothing.
 */
export async function migrateTemporalDatabase(sqlTool: string, target: PgTarget, database: string, schemaName: string): Promise<void> {
  const env = {
    ...process.env,
    SQL_PLUGIN: 'postgres12',
    SQL_HOST: target.host,
    SQL_PORT: String(target.port),
    SQL_USER: target.user,
    // In the environment, not argv: a command line is readable by every user of the machine.
    SQL_PASSWORD: target.password,
    SQL_DATABASE: database,
  };
  const tool = async (...args: string[]) => {
    try {
      await run(sqlTool, ['--quiet', ...args], { env, maxBuffer: 16 * 1024 * 1024 });
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string };
      throw new Error(`temporal-sql-tool ${args.join(' ')} on ${database} failed:\n${(e.stderr || e.stdout || String(err)).slice(-3000)}`);
    }
  };
  const admin = new pg.Client({ ...target, database: 'postgres' });
  await admin.connect();
  let exists: boolean;
  try {
    exists = ((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount ?? 0) > 0;
  } finally {
    await admin.end();
  }
  if (!exists) await tool('create-database');
  const db = new pg.Client({ ...target, database });
  await db.connect();
  let versioned: boolean;
  try {
    versioned = ((await db.query(`SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version'`)).rowCount ?? 0) > 0;
  } finally {
    await db.end();
  }
  if (!versioned) await tool('setup-schema', '-v', '0.0');
  await tool('update-schema', '--schema-name', schemaName);
}

interface ServicePorts {
  grpc: number;
  membership: number;
}

/** The server's static config; JSON is YAML, so no YAML writer is needed. */
export function serverConfig(opts: { target: PgTarget; historyShards: number; frontendPort: number; ports: Record<'frontend' | 'history' | 'matching' | 'worker', ServicePorts>; dynamicConfigFile: string }): object {
  const datastore = (database: string, maxConns: number) => ({
    sql: {
      pluginName: 'postgres12',
      databaseName: database,
      connectAddr: `${opts.target.host}:${opts.target.port}`,
      connectProtocol: 'tcp',
      user: opts.target.user,
      password: opts.target.password,
      // Four services share the process, each with its own pools: keep well under max_connections.
      maxConns,
      maxIdleConns: maxConns,
      maxConnLifetime: '1h',
    },
  });
  const service = (p: ServicePorts) => ({ rpc: { grpcPort: p.grpc, membershipPort: p.membership, bindOnLocalHost: true } });
  return {
    log: { stdout: true, level: 'warn' },
    persistence: {
      defaultStore: 'postgres-default',
      visibilityStore: 'postgres-visibility',
      numHistoryShards: opts.historyShards,
      datastores: {
        'postgres-default': datastore(TEMPORAL_DATABASES.history, 10),
        'postgres-visibility': datastore(TEMPORAL_DATABASES.visibility, 4),
      },
    },
    global: { membership: { maxJoinDuration: '30s', broadcastAddress: '127.0.0.1' } },
    services: {
      frontend: service(opts.ports.frontend),
      history: service(opts.ports.history),
      matching: service(opts.ports.matching),
      worker: service(opts.ports.worker),
    },
    clusterMetadata: {
      enableGlobalNamespace: false,
      failoverVersionIncrement: 10,
      masterClusterName: 'active',
      currentClusterName: 'active',
      clusterInformation: { active: { enabled: true, initialFailoverVersion: 1, rpcName: 'frontend', rpcAddress: `127.0.0.1:${opts.frontendPort}` } },
    },
    dcRedirectionPolicy: { policy: 'noop' },
    dynamicConfigClient: { filepath: opts.dynamicConfigFile, pollInterval: '10s' },
  };
}

/** Dynamic config: what a local cluster needs to behave like the dev server for tests and the UI. */
export const DYNAMIC_CONFIG: Record<string, unknown> = {
  // A namespace is served 1 s after it is registered instead of 10 s.
  'system.namespaceCacheRefreshInterval': '1s',
  // New search attributes are usable at once (the dev server's default too).
  'system.forceSearchAttributesCacheRefreshOnRead': true,
  'frontend.persistenceMaxQPS': 10000,
  'history.persistenceMaxQPS': 45000,
  'frontend.enableUpdateWorkflowExecution': true,
  'frontend.enableExecuteMultiOperation': true,
  'limit.maxIDLength': 1000,
};

function dynamicConfigFile(values: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(values).map(([k, value]) => [k, [{ value, constraints: {} }]])), null, 2);
}

/**
 * A free port below 32768: the server records membership ports in a `smallint` column
 * (cluster_membership.rpc_port), and the kernel hands out free ports above that.
 */
async function freeMembershipPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (taken.has(port)) continue;
    if (await canListen(port)) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port between 20000 and 32000 for the Temporal server\'s membership');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function servicePorts(frontend: number): Promise<Record<'frontend' | 'history' | 'matching' | 'worker', ServicePorts>> {
  const taken = new Set<number>();
  const membership = () => freeMembershipPort(taken);
  return {
    frontend: { grpc: frontend, membership: await membership() },
    history: { grpc: await freePort(), membership: await membership() },
    matching: { grpc: await freePort(), membership: await membership() },
    worker: { grpc: await freePort(), membership: await membership() },
  };
}

export async function startTemporalCluster(opts: TemporalClusterOptions): Promise<TemporalServer> {
  const log = opts.log ?? (() => {});
  const configDir = join(opts.dir, 'config');
  await mkdir(configDir, { recursive: true });
  const target = pgTarget(opts.postgresUrl);
  const namespace = opts.namespace ?? 'default';
  const t0 = Date.now();
  await migrateTemporalDatabase(opts.bins.sqlTool, target, TEMPORAL_DATABASES.history, 'postgresql/v12/temporal');
  await migrateTemporalDatabase(opts.bins.sqlTool, target, TEMPORAL_DATABASES.visibility, 'postgresql/v12/visibility');
  log(`temporal databases ${TEMPORAL_DATABASES.history} and ${TEMPORAL_DATABASES.visibility} up to date (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

  const port = opts.port ?? (await freePort());
  const dynamicConfig = join(configDir, 'dynamic.yaml');
  await writeFile(dynamicConfig, dynamicConfigFile(DYNAMIC_CONFIG));
  const config = serverConfig({ target, historyShards: opts.historyShards ?? 4, frontendPort: port, ports: await servicePorts(port), dynamicConfigFile: dynamicConfig });
  // It holds the database password: readable by its owner only.
  await writeFile(join(configDir, 'repowalk.yaml'), `# generated by repowalk (stack/temporal-cluster.ts) at each start\n${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });

  const logFile = join(opts.dir, 'temporal-server.log');
  const server = spawnLogged('temporal-server', opts.bins.server, ['--root', opts.dir, '--config', 'config', '--env', 'repowalk', '--allow-no-auth', 'start'], { logFile });
  const children: Child[] = [server];
  const stop = async () => {
    for (const c of children.reverse()) await c.stop(20_000);
  };
  const address = `127.0.0.1:${port}`;
  try {
    await waitFor(`Temporal server on ${address}`, async () => {
      const conn = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await conn.workflowService.getSystemInfo({});
        return true;
      } finally {
        await conn.close();
      }
    }, 120_000, server, logFile);
    const conn = await Connection.connect({ address });
    try {
      await prepareNamespace(conn, { namespace, log });
    } finally {
      await conn.close();
    }
    let uiUrl: string | undefined;
    if ((opts.ui ?? true) && opts.bins.ui) {
      const uiPort = opts.uiPort ?? (await freePort());
      uiUrl = await startUi(opts.bins.ui, opts.dir, { address, uiPort, namespace }, children);
    }
    return { address, uiUrl, namespace, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The standalone Web UI server pointed at the frontend; resolves once it serves its page. */
async function startUi(bin: string, dir: string, opts: { address: string; uiPort: number; namespace: string }, children: Child[]): Promise<string> {
  const uiDir = join(dir, 'ui');
  await mkdir(uiDir, { recursive: true });
  const config = {
    temporalGrpcAddress: opts.address,
    host: '127.0.0.1',
    port: opts.uiPort,
    enableUi: true,
    defaultNamespace: opts.namespace,
    cors: { cookieInsecure: true },
    hideLogs: true,
    notifyOnNewVersion: false,
  };
  await writeFile(join(uiDir, 'repowalk.yaml'), `# generated by repowalk (stack/temporal-cluster.ts)\n${JSON.stringify(config, null, 2)}\n`);
  const logFile = join(dir, 'temporal-ui.log');
  const child = spawnLogged('temporal-ui', bin, ['--root', dir, '--config', 'ui', '--env', 'repowalk', 'start'], { logFile });
  children.push(child);
  const url = `http://127.0.0.1:${opts.uiPort}`;
  await waitFor(`Temporal Web UI on ${url}`, async () => (await fetch(url)).ok, 60_000, child, logFile);
  return url;
}
