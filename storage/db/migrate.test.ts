import { afterAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { MIGRATION_LOCK_KEY, MIGRATIONS_DIR, migrate, readMigrations } from './migrate.ts';
import { MigrationChecksumError, MigrationFailedError, MigrationOrderError } from './errors.ts';
import { openPool } from './pool.ts';

const pools: pg.Pool[] = [];
const dirs: string[] = [];

async function pool(): Promise<pg.Pool> {
  const p = openPool(await freshDatabase('migrate'));
  pools.push(p);
  return p;
}

/** A copy of the shipped migrations that a test may edit. */
async function migrationsCopy(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'repowalk-migrations-'));
  dirs.push(dir);
  await cp(MIGRATIONS_DIR, dir, { recursive: true });
  return dir;
}

/** Everything that makes up the schema, in a stable order, as one comparable value. */
async function schemaDump(p: pg.Pool): Promise<unknown> {
  const columns = await p.query(
    `SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default
     FROM information_schema.columns WHERE table_schema = 'public'
     ORDER BY table_name, ordinal_position`,
  );
  const constraints = await p.query(
    `SELECT conrelid::regclass::text AS table_name, conname, pg_get_constraintdef(oid) AS def
     FROM pg_constraint WHERE connamespace = 'public'::regnamespace
     ORDER BY table_name, conname`,
  );
  const indexes = await p.query(
    `SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname`,
  );
  return { columns: columns.rows, constraints: constraints.rows, indexes: indexes.rows };
}

afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('migrate', () => {
  it('applies every migration once; a second run applies nothing and leaves the schema unchanged', async () => {
    const p = await pool();
    const files = (await readMigrations()).map((f) => f.file);
    expect(files[0]).toBe('0001_init.sql');

    const first = await migrate(p);
    expect(first).toEqual({ applied: files, skipped: [], ahead: [] });
    const before = await schemaDump(p);

    const second = await migrate(p);
    expect(second).toEqual({ applied: [], skipped: files, ahead: [] });
    expect(await schemaDump(p)).toEqual(before);

    const tables = await p.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    );
    expect(tables.rows.map((r) => r.table_name)).toEqual(
      expect.arrayContaining([
        'blobs',
        'blocks',
        'collection_counts',
        'events',
        'heal_queue',
        'job_state',
        'packs',
        'records',
        'repos',
        'schema_migrations',
        'walk_findings',
      ]),
    );
    const recorded = await p.query('SELECT version, name, checksum FROM schema_migrations ORDER BY version');
    expect(recorded.rows.map((r) => r.name)).toEqual(files);
  });

  it('lets concurrent runs race: both succeed and each migration is applied once', async () => {
    const url = await freshDatabase('migrate_race');
    const a = openPool(url);
    const b = openPool(url);
    pools.push(a, b);
    const files = (await readMigrations()).map((f) => f.file);

    const results = await Promise.all([migrate(a), migrate(b), migrate(a)]);
    expect(results.flatMap((r) => r.applied).sort()).toEqual(files);
    for (const r of results) expect([...r.applied, ...r.skipped].sort()).toEqual(files);
    const rows = await a.query('SELECT version FROM schema_migrations');
    expect(rows.rowCount).toBe(files.length);
  });

  it('waits for a migrator holding the lock, past a pool-wide statement timeout', async () => {
    const url = await freshDatabase('migrate_wait');
    const holder = openPool(url);
    const impatient = openPool(url, { statementTimeoutMs: 300 });
    pools.push(holder, impatient);
    const held = await holder.connect();
    await held.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY.toString()]);

    let done = false;
    const running = migrate(impatient).finally(() => (done = true));
    await new Promise((r) => setTimeout(r, 1000));
    expect(done).toBe(false);
    await held.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY.toString()]);
    held.release();
    expect((await running).applied).toContain('0001_init.sql');
    // The connection went back to the pool without the lock: a second run is not blocked.
    expect((await migrate(impatient)).applied).toEqual([]);
  });

  it('refuses to run when an applied migration changed, naming the file', async () => {
    const p = await pool();
    const dir = await migrationsCopy();
    await migrate(p, { dir });
    await appendFile(join(dir, '0001_init.sql'), '\n-- an edit after the fact\n');

    const err = await migrate(p, { dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationChecksumError);
    expect((err as MigrationChecksumError).file).toBe('0001_init.sql');
    expect((err as Error).message).toContain('0001_init.sql');
  });

  it('rolls back a failing migration, names it, and keeps the earlier ones', async () => {
    const p = await pool();
    const dir = await migrationsCopy();
    await writeFile(join(dir, '9001_broken.sql'), 'CREATE TABLE half_done (x int);\nSELECT * FROM no_such_table;\n');

    const err = await migrate(p, { dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationFailedError);
    expect((err as Error).message).toMatch(/9001_broken\.sql.*no_such_table/);

    const half = await p.query(`SELECT to_regclass('public.half_done') AS t`);
    expect(half.rows[0].t).toBeNull();
    const rows = await p.query<{ name: string }>('SELECT name FROM schema_migrations ORDER BY version');
    expect(rows.rows.map((r) => r.name)).not.toContain('9001_broken.sql');
    expect(rows.rows.map((r) => r.name)).toContain('0001_init.sql');

    // Fixed, it applies on the next run.
    await writeFile(join(dir, '9001_broken.sql'), 'CREATE TABLE half_done (x int);\n');
    expect((await migrate(p, { dir })).applied).toEqual(['9001_broken.sql']);
  });

  it('refuses a pending migration that sorts before an applied one', async () => {
    const p = await pool();
    const dir = await migrationsCopy();
    await writeFile(join(dir, '9002_later.sql'), 'SELECT 1;\n');
    await migrate(p, { dir });
    await writeFile(join(dir, '9000_forgotten.sql'), 'SELECT 1;\n');

    const err = await migrate(p, { dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationOrderError);
    expect((err as Error).message).toContain('9000_forgotten.sql');
  });

  it('reports migrations applied by a newer build without failing', async () => {
    const p = await pool();
    const dir = await migrationsCopy();
    await writeFile(join(dir, '9003_newer.sql'), 'SELECT 1;\n');
    await migrate(p, { dir });
    expect(await migrate(p)).toMatchObject({ applied: [], ahead: ['9003_newer.sql'] });
  });

  it('refuses badly named migration files', async () => {
    const dir = await migrationsCopy();
    await writeFile(join(dir, 'add-things.sql'), 'SELECT 1;\n');
    await expect(readMigrations(dir)).rejects.toThrow(MigrationOrderError);
  });

  it('ships SQL without transaction control (each file runs inside our transaction)', async () => {
    for (const f of await readMigrations()) {
      const sql = (await readFile(join(MIGRATIONS_DIR, f.file), 'utf8')).replace(/--.*$/gm, '');
      expect(sql, f.file).not.toMatch(/\b(BEGIN|COMMIT|ROLLBACK)\s*;|\bCONCURRENTLY\b/i);
    }
  });
});
