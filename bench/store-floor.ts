/**
 * `node bench/store-floor.ts --database-url URL [--records 100000] [--runs 3]`: what PostgreSQL
 * alone spends to write the rows of a first import, and the least it could spend on them.
 *
 * It runs the first import of bench/import.ts (a signed repo of `--records` records, into a fresh
 * database), then writes that import's rows again, table by table (`blocks`, `records`,
 * `events`), into a scratch copy of the table, with one `INSERT … SELECT` in one transaction, and
 * reads the backend's CPU (/proc) for each of three index sets:
 * - `all`: the table's own indexes (what an import pays for them, without COPY's parsing);
 * - `primaryKey`: the primary key alone (the least that keeps the table's rows addressable);
 * - `heap`: no index (the rows and their WAL alone);
 * - and each other index alone beside the primary key (`secondary`: its ms above `primaryKey`).
 *
 * The import's own `cpuMsByStep` shows what it pays with COPY on top of that. A first import runs
 * in one transaction, so on one backend, so on one core: the sum of the `primaryKey` figures is
 * a floor on that backend's CPU for the import, whatever the store path does in front of it.
 * Medians of `--runs` runs, milliseconds.
 */
import pg from 'pg';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { benchImport } from './import.ts';

const TABLES = ['blocks', 'records', 'events'] as const;

export interface StoreFloor {
  records: number;
  rows: Record<(typeof TABLES)[number], number>;
  /** The import's PostgreSQL CPU by step (ms), from bench/import.ts. */
  importPostgresMsByStep: Record<string, number | null>;
  importPostgresMs: number;
  /** Backend CPU (ms) to insert each table's rows again, by index set; medians. */
  insertMs: Record<(typeof TABLES)[number], { all: number; primaryKey: number; heap: number; secondary: Record<string, number> }>;
  /** Sums over the three tables. */
  sumMs: { all: number; primaryKey: number; heap: number };
}

function backendCpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchStoreFloor(opts: { databaseUrl: string; records: number; runs: number; log?: (l: string) => void }): Promise<StoreFloor> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const imported = await benchImport({ records: opts.records, databaseUrl: opts.databaseUrl, firstOnly: true, keepDatabase: true, log });
  const kept = imported.kept!;
  const c = new pg.Client({ connectionString: kept.url });
  await c.connect();
  try {
    const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const rows = {} as StoreFloor['rows'];
    const insertMs = {} as StoreFloor['insertMs'];
    for (const table of TABLES) {
      rows[table] = Number((await c.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
      const { rows: defs } = await c.query<{ name: string; def: string; primary: boolean }>(
        `SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def, indisprimary AS primary FROM pg_index WHERE indrelid = $1::regclass`,
        [table],
      );
      // The same index on the scratch table: its definition with the table's name replaced.
      const on = (def: string) => def.replace(/ INDEX \S+ ON (public\.)?\S+ /, ' INDEX ON floor_scratch ');
      const primary = defs.filter((d) => d.primary).map((d) => on(d.def));
      // Each other index alone beside the primary key: what that index costs the import.
      const sets: Record<string, string[]> = { all: defs.map((d) => on(d.def)), primaryKey: primary, heap: [] };
      for (const d of defs) if (!d.primary) sets[`+${d.name}`] = [...primary, on(d.def)];
      const times: Record<string, number[]> = Object.fromEntries(Object.keys(sets).map((k) => [k, []]));
      for (let run = 0; run < opts.runs; run++) {
        for (const set of Object.keys(sets)) {
          await c.query('DROP TABLE IF EXISTS floor_scratch');
          await c.query(`CREATE TABLE floor_scratch (LIKE ${table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`);
          for (const ddl of sets[set]!) await c.query(ddl);
          // Dirty pages of the run before written out, so that each run starts alike.
          await c.query('CHECKPOINT');
          const before = backendCpuMs(pid);
          await c.query('BEGIN');
          await c.query(`INSERT INTO floor_scratch SELECT * FROM ${table}`);
          await c.query('COMMIT');
          times[set]!.push(backendCpuMs(pid) - before);
        }
      }
      await c.query('DROP TABLE IF EXISTS floor_scratch');
      const m = (k: string) => median(times[k]!);
      const secondary = Object.fromEntries(defs.filter((d) => !d.primary).map((d) => [d.name, m(`+${d.name}`) - m('primaryKey')]));
      insertMs[table] = { all: m('all'), primaryKey: m('primaryKey'), heap: m('heap'), secondary };
      log(`store-floor: ${table} (${rows[table]} rows): all indexes ${insertMs[table].all} ms, primary key ${insertMs[table].primaryKey}, heap ${insertMs[table].heap}; each other index beside the primary key: ${JSON.stringify(secondary)}`);
    }
    const sum = (k: 'all' | 'primaryKey' | 'heap') => TABLES.reduce((s, t) => s + insertMs[t][k], 0);
    const steps = imported.firstImport.cpuMsByStep;
    return {
      records: opts.records,
      rows,
      importPostgresMsByStep: Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, v.postgres])),
      importPostgresMs: Math.round(imported.firstImport.cpuSeconds.postgres! * 1000),
      insertMs,
      sumMs: { all: sum('all'), primaryKey: sum('primaryKey'), heap: sum('heap') },
    };
  } finally {
    await c.end();
    await kept.drop();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, records: { type: 'string', default: '100000' }, runs: { type: 'string', default: '3' } } });
  const databaseUrl = values['database-url'] ?? process.env.DATABASE_URL;
  if (!databaseUrl) throw new Error('bench/store-floor.ts needs --database-url or DATABASE_URL');
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: ${JSON.stringify(values.runs)} is not a count of runs (an integer ≥ 1)`);
  console.log(JSON.stringify(await benchStoreFloor({ databaseUrl, records: Number(values.records), runs }), null, 2));
  process.exit(0);
}
