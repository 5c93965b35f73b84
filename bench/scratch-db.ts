/**
 * A database of its own for one bench run, on the server `baseUrl` names, and its removal: a
 * bench pointed at a server with `--database-url` leaves nothing behind (a 100,000-record
 * import's database is ~80 MB, a 1,000,000-record one ~800 MB).
 */
import pg from 'pg';

export interface ScratchDatabase {
  /** The database's name. */
  name: string;
  /** `baseUrl` with the database's name as its path. */
  url: string;
  /** Drops the database, ending any connection still open to it. */
  drop(): Promise<void>;
}

export async function scratchDatabase(baseUrl: string, prefix: string): Promise<ScratchDatabase> {
  if (!/^[a-z_][a-z0-9_]*$/.test(prefix)) throw new Error(`not a plain database name prefix: ${JSON.stringify(prefix)}`);
  const name = `${prefix}_${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: baseUrl });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const u = new URL(baseUrl);
  u.pathname = `/${name}`;
  return { name, url: u.toString(), drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
