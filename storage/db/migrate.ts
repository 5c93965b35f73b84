/**
 * Versioned migrations: `storage/db/migrations/NNNN_name.sql`, applied in version order, each in
 * its own transaction, recorded with a checksum in `schema_migrations`.
 *
 * A migration file must not contain transaction control (BEGIN/COMMIT) or statements that cannot
 * run in a transaction (CREATE INDEX CONCURRENTLY).
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type pg from 'pg';
import { MigrationChecksumError, MigrationFailedError, MigrationOrderError } from './errors.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

/**
 * The advisory lock every migrating process takes, so that workers starting at once apply each
 * migration exactly once. A fixed 64-bit number: the first 8 bytes of sha256('repowalk:migrate').
 */
export const MIGRATION_LOCK_KEY = createHash('sha256').update('repowalk:migrate').digest().readBigInt64BE(0);

export interface MigrateOptions {
  /** Folder of `NNNN_name.sql` files. Default: the migrations shipped beside this module. */
  dir?: string;
  /** Called once per applied migration, e.g. to log it. */
  onApplied?: (file: string, ms: number) => void;
}

export interface MigrateResult {
  /** Files applied by this call, in order. */
  applied: string[];
  /** Files that were already applied. */
  skipped: string[];
  /**
   * Names recorded in `schema_migrations` that have no file here: the database was migrated by
   * a newer build. Not an error (rolling deploys run old and new code side by side).
   */
  ahead: string[];
}

interface MigrationFile {
  version: number;
  file: string;
  sql: string;
  checksum: string;
}

const FILE_PATTERN = /^(\d{4,})_[a-z0-9_]+\.sql$/;

/** Reads and orders the migration files of `dir`. */
export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.sql')).sort();
  const files: MigrationFile[] = [];
  for (const file of names) {
    const m = FILE_PATTERN.exec(file);
    if (!m) throw new MigrationOrderError(`migration file name ${file} is not NNNN_lowercase_name.sql`);
    const bytes = await readFile(join(dir, file));
    files.push({
      version: Number(m[1]),
      file,
      sql: bytes.toString('utf8'),
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  files.sort((a, b) => a.version - b.version);
  for (let i = 1; i < files.length; i++) {
    if (files[i]!.version === files[i - 1]!.version) {
      throw new MigrationOrderError(`migrations ${files[i - 1]!.file} and ${files[i]!.file} share version ${files[i]!.version}`);
    }
  }
  return files;
}

/**
 * Applies every pending migration. Safe to run from several processes at once (they serialize
 * on an advisory lock) and idempotent (a second run applies nothing).
 *
 * @throws {MigrationChecksumError} when an applied migration's file changed (names the file).
 * @throws {MigrationOrderError} on a bad file name, a duplicate version, or a pending migration
 *   older than an applied one.
 * @throws {MigrationFailedError} when a migration's SQL fails (names the file); migrations
 *   before it stay applied.
 */
export async function migrate(pool: pg.Pool, opts: MigrateOptions = {}): Promise<MigrateResult> {
  const files = await readMigrations(opts.dir);
  const client = await pool.connect();
  const key = MIGRATION_LOCK_KEY.toString();
  let reusable = false;
  try {
    // Session-level lock on this one connection, held across all migrations; it waits for a
    // concurrent migrator to finish. If a process dies, its connection closes and Postgres
    // releases the lock. Taken inside a transaction only to lift a pool-wide statement timeout
    // for the wait; a session lock outlives the transaction.
    await client.query('BEGIN; SET LOCAL statement_timeout = 0');
    await client.query('SELECT pg_advisory_lock($1)', [key]);
    await client.query('COMMIT');
    try {
      return await migrateLocked(client, files, opts);
    } finally {
      reusable = await client.query('SELECT pg_advisory_unlock($1)', [key]).then(
        () => true,
        () => false,
      );
    }
  } finally {
    // Only a connection that gave the lock back may return to the pool: one still holding it
    // would block every later migration. Closing a connection releases its locks.
    client.release(reusable ? undefined : new Error('migration connection discarded'));
  }
}

async function migrateLocked(client: pg.PoolClient, files: MigrationFile[], opts: MigrateOptions): Promise<MigrateResult> {
  // Created under the lock: two concurrent CREATE TABLE IF NOT EXISTS can still collide.
  await client.query(`
    CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      checksum   text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
  const { rows } = await client.query<{ version: number; name: string; checksum: string }>(
    'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
  );
  const applied = new Map(rows.map((r) => [r.version, r]));
  const known = new Set(files.map((f) => f.version));
  const result: MigrateResult = {
    applied: [],
    skipped: [],
    ahead: rows.filter((r) => !known.has(r.version)).map((r) => r.name),
  };
  const newestApplied = rows.at(-1);

  for (const f of files) {
    const done = applied.get(f.version);
    if (done) {
      if (done.checksum !== f.checksum) throw new MigrationChecksumError(f.file, done.checksum, f.checksum);
      result.skipped.push(f.file);
      continue;
    }
    if (newestApplied && f.version < newestApplied.version) {
      throw new MigrationOrderError(
        `migration ${f.file} is pending but the later ${newestApplied.name} is already applied; ` +
          `renumber it after ${newestApplied.name}`,
      );
    }
    const started = performance.now();
    try {
      await client.query('BEGIN');
      // Migrations may rewrite large tables; a pool-wide statement timeout must not cut them off.
      await client.query('SET LOCAL statement_timeout = 0');
      await client.query(f.sql);
      await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
        f.version,
        f.file,
        f.checksum,
      ]);
      await client.query('COMMIT');
    } catch (err) {
      // If the connection itself failed, ROLLBACK fails too; the error to report is the first.
      await client.query('ROLLBACK').catch(() => {});
      throw new MigrationFailedError(f.file, err);
    }
    result.applied.push(f.file);
    opts.onApplied?.(f.file, performance.now() - started);
  }
  return result;
}
