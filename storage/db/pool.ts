/**
 * Opening Postgres: a small pool with sane defaults, transactions, and URLs that never show
 * their password.
 */
import pg from 'pg';
import { DatabaseConnectError } from './errors.ts';

export interface PoolOptions {
  /** Most connections the pool opens. Default 5: activities share a worker's pool. */
  max?: number;
  /** Server-side statement timeout in milliseconds; 0 or unset means none. */
  statementTimeoutMs?: number;
  /** Shown in `pg_stat_activity`. Default `repowalk`. */
  applicationName?: string;
  /** How long to wait for a connection, in milliseconds. Default 10 000. */
  connectionTimeoutMs?: number;
  /** How long an idle connection stays open, in milliseconds. Default 30 000. */
  idleTimeoutMs?: number;
  /**
   * Called when an idle connection fails (server restart, network). Default: one line on
   * stderr naming the redacted URL. Without a handler pg would crash the process.
   */
  onError?: (err: Error) => void;
}

/**
 * A pool for `url` (a `postgres://` URL). Connects lazily: a bad host or password shows up on
 * first use, or at once through {@link connectPool}.
 */
export function openPool(url: string, opts: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 5,
    application_name: opts.applicationName ?? 'repowalk',
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 10_000,
    idleTimeoutMillis: opts.idleTimeoutMs ?? 30_000,
    ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
  });
  const redacted = redactUrl(url);
  pool.on(
    'error',
    opts.onError ?? ((err) => process.stderr.write(`repowalk: idle Postgres connection to ${redacted} failed: ${err.message}\n`)),
  );
  return pool;
}

/**
 * Opens a pool and checks that it can run a query.
 *
 * @throws {DatabaseConnectError} naming the redacted URL when Postgres cannot be reached.
 */
export async function connectPool(url: string, opts: PoolOptions = {}): Promise<pg.Pool> {
  const pool = openPool(url, opts);
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => {});
    throw new DatabaseConnectError(redactUrl(url), err);
  }
  return pool;
}

/** Something that runs queries: a pool, a pooled client, or a client in a transaction. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

export interface TransactionOptions {
  /**
   * Settings that hold for this transaction only (`SET LOCAL name = value`), sent with the BEGIN
   * in one round trip. Names and values are the caller's constants, never input.
   */
  settings?: Readonly<Record<string, string>>;
  /**
   * Advisory locks taken shared for this transaction (`pg_advisory_xact_lock_shared`), with the
   * BEGIN and before anything else the transaction does: for a lock that marks what kind of
   * writer the transaction is (`EVENT_WRITER_LOCK_KEY`). The keys are the caller's constants.
   */
  sharedLocks?: readonly bigint[];
}

/**
 * Runs `fn` in a transaction on one pooled connection: COMMIT when it resolves, ROLLBACK when it
 * throws (and the error is rethrown). A connection whose ROLLBACK fails is discarded rather than
 * returned to the pool in an unknown state.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const begin = beginStatement(options);
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(begin);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    try {
      await client.query('ROLLBACK');
    } catch (rollbackErr) {
      broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
    }
    throw err;
  } finally {
    client.release(broken);
  }
}

const SETTING_NAME = /^[a-z_][a-z0-9_.]*$/;
const SETTING_VALUE = /^[A-Za-z0-9_.-]+$/;

function beginStatement(options: TransactionOptions): string {
  let sql = 'BEGIN';
  for (const [name, value] of Object.entries(options.settings ?? {})) {
    if (!SETTING_NAME.test(name) || !SETTING_VALUE.test(value)) throw new Error(`not a plain setting: ${JSON.stringify(name)} = ${JSON.stringify(value)}`);
    sql += `; SET LOCAL ${name} = ${value}`;
  }
  // A bigint is its own digits: nothing else can reach the statement.
  for (const key of options.sharedLocks ?? []) sql += `; SELECT pg_advisory_xact_lock_shared(${BigInt.asIntN(64, key).toString()})`;
  return sql;
}

/**
 * The URL with its password replaced by `***` (in the authority and in a `password` query
 * parameter), for logs and error messages. A string that does not parse as a URL has anything
 * that looks like `user:password@` masked instead.
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url.replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
  }
  if (parsed.password) parsed.password = '***';
  if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '***');
  // URL encodes the asterisks in the search string; keep them readable.
  return parsed.toString().replace(/%2A%2A%2A/g, '***');
}
