/**
 * The local stack: Temporal (the dev server, or with `temporal.mode` 'server' the real server on
 * the stack's PostgreSQL), PostgreSQL (unless DATABASE_URL is set) and an S3 server, started
 * together, described in `<stateDir>/stack.json`, and stopped together.
 * `repowalk stack up` runs `startStack` in a detached supervisor process; the tests' global
 * setup runs it in-process on free ports.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ensureGoTool, TEMPORAL_CLI, TEMPORAL_SERVER, TEMPORAL_SQL_TOOL, TEMPORAL_UI_SERVER, VERSITYGW } from './tools.ts';
import { startTemporalServer, type TemporalServer } from './temporal-server.ts';
import { startTemporalCluster } from './temporal-cluster.ts';
import { startPostgres, type PostgresServer } from './postgres.ts';
import { startS3Server, type S3Server } from './s3-server.ts';
import { stackFile, type StackInfo, type TemporalMode } from '../config/stack-info.ts';

export { readStackInfo, stackFile, type StackInfo } from '../config/stack-info.ts';

export interface StackOptions {
  stateDir: string;
  cacheDir: string;
  /**
   * A port of 0 means a free one. `mode` 'dev' (the default) runs `temporal server start-dev`;
   * 'server' runs the real Temporal server with PostgreSQL persistence and SQL visibility.
   */
  temporal: { port: number; uiPort: number; ui: boolean; namespace: string; mode?: TemporalMode | undefined };
  /** `url` set means an external PostgreSQL: none is started. */
  postgres: { url?: string | undefined; port: number };
  s3: { enabled: boolean; port: number; buckets: string[]; region: string };
  /** A local reference PDS and PLC (the demo's data source); its first start installs it (~2 min). */
  pds?: { enabled: boolean };
  log?: (line: string) => void;
}

export type { TemporalMode } from '../config/stack-info.ts';

export interface RunningStack {
  info: StackInfo;
  stop(): Promise<void>;
}

export interface StackTools {
  temporal: string;
  versitygw?: string;
  /** The real server's binaries, in 'server' mode. */
  server?: { server: string; sqlTool: string; ui: string | undefined };
}

/** Builds or finds the binaries (slow only the first time on a machine). */
export async function ensureStackTools(cacheDir: string, withS3: boolean, log: (l: string) => void, mode: TemporalMode = 'dev', withUi = true): Promise<StackTools> {
  const [temporal, versitygw, server] = await Promise.all([
    ensureGoTool(cacheDir, TEMPORAL_CLI, log),
    withS3 ? ensureGoTool(cacheDir, VERSITYGW, log) : Promise.resolve(undefined),
    // One after another: the three share most packages, so each later build mostly hits Go's build cache.
    mode === 'server'
      ? (async () => {
          const server = await ensureGoTool(cacheDir, TEMPORAL_SERVER, log);
          const sqlTool = await ensureGoTool(cacheDir, TEMPORAL_SQL_TOOL, log);
          const ui = withUi ? await ensureGoTool(cacheDir, TEMPORAL_UI_SERVER, log) : undefined;
          return { server, sqlTool, ui };
        })()
      : Promise.resolve(undefined),
  ]);
  return { temporal, ...(versitygw ? { versitygw } : {}), ...(server ? { server } : {}) };
}

async function s3Credentials(dir: string): Promise<{ accessKeyId: string; secretAccessKey: string }> {
  const file = join(dir, 'credentials.json');
  if (existsSync(file)) return JSON.parse(await readFile(file, 'utf8'));
  const creds = { accessKeyId: `repowalk${randomBytes(4).toString('hex')}`, secretAccessKey: randomBytes(18).toString('base64url') };
  await writeFile(file, JSON.stringify(creds), { mode: 0o600 });
  return creds;
}

export async function startStack(opts: StackOptions): Promise<RunningStack> {
  const log = opts.log ?? (() => {});
  await mkdir(opts.stateDir, { recursive: true });
  const mode = opts.temporal.mode ?? 'dev';
  const bins = await ensureStackTools(opts.cacheDir, opts.s3.enabled, log, mode, opts.temporal.ui);

  const started: { stop(): Promise<void> }[] = [];
  const stopAll = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
  };
  try {
    const pgDir = join(opts.stateDir, 'postgres');
    const s3Dir = join(opts.stateDir, 's3');
    const postgresStart = opts.postgres.url
      ? Promise.resolve(undefined)
      : (startPostgres({ dir: pgDir, port: opts.postgres.port || undefined }).then((p) => (started.push(p), p)) as Promise<PostgresServer>);
    const temporalOptions = {
      dir: join(opts.stateDir, 'temporal'),
      port: opts.temporal.port || undefined,
      uiPort: opts.temporal.uiPort || undefined,
      ui: opts.temporal.ui,
      namespace: opts.temporal.namespace,
    };
    const [temporal, postgres, s3] = await Promise.all([
      (mode === 'server'
        ? // The real server keeps its history in PostgreSQL: it starts once PostgreSQL answers.
          postgresStart.then((p) =>
            startTemporalCluster({ ...temporalOptions, bins: bins.server!, postgresUrl: p?.url ?? opts.postgres.url!, log }),
          )
        : startTemporalServer({ ...temporalOptions, bin: bins.temporal })
      ).then((t) => (started.push(t), t)) as Promise<TemporalServer>,
      postgresStart,
      opts.s3.enabled && bins.versitygw
        ? mkdir(s3Dir, { recursive: true })
            .then(() => s3Credentials(s3Dir))
            .then(async (creds) => {
              const server = await startS3Server({ bin: bins.versitygw!, dir: s3Dir, port: opts.s3.port || undefined, ...creds, region: opts.s3.region, buckets: opts.s3.buckets });
              started.push(server);
              return { server, creds };
            })
        : Promise.resolve(undefined),
    ]);
    let pds: StackInfo['pds'];
    if (opts.pds?.enabled) {
      log('starting the local PDS and PLC (the first start installs them, about 2 minutes)');
      // Loaded only when asked for: most stacks run no PDS.
      const { startPds } = await import('./pds.ts');
      const server = await startPds({ dataDir: join(opts.stateDir, 'pds') });
      started.push(server);
      pds = { url: server.pdsUrl, plcUrl: server.plcUrl, publicUrl: server.publicUrl };
    }
    const info: StackInfo = {
      pid: process.pid,
      startedAt: new Date().toISOString(),
      stateDir: opts.stateDir,
      temporal: { address: temporal.address, namespace: temporal.namespace, uiUrl: temporal.uiUrl, bin: bins.temporal, mode },
      postgres: { url: postgres?.url ?? opts.postgres.url!, embedded: postgres !== undefined },
      s3: s3
        ? { endpoint: (s3.server as S3Server).endpoint, region: opts.s3.region, ...s3.creds, buckets: opts.s3.buckets, bin: bins.versitygw! }
        : undefined,
      blobDir: join(opts.stateDir, 'blobs'),
      pds,
    };
    return { info, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

export async function writeStackInfo(info: StackInfo): Promise<void> {
  await writeFile(stackFile(info.stateDir), JSON.stringify(info, null, 2), { mode: 0o600 });
}

export async function removeStackInfo(stateDir: string): Promise<void> {
  await rm(stackFile(stateDir), { force: true });
}
