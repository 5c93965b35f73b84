/**
 * Findings: what a walk's checks found, with the route that led to each. They go to Postgres
 * (`walk_findings`, idempotent per walk, check, node type and key, so a page retried after a
 * crash records nothing twice) and, counted, into the walk's totals.
 */
import type { Queryable } from '../storage/db/pool.ts';
import type { NodeType } from './schema.ts';
import type { RouteHop } from './route.ts';

export type Severity = 'error' | 'warn' | 'info';

export interface Finding {
  /** The check that failed (`block-hash`, `refcount`, `scrub-missing`, …) or a step's error code. */
  check: string;
  severity: Severity;
  nodeType: NodeType;
  key: string;
  route: RouteHop[];
  detail: string;
  /** Blobstore components the finding is about (scrub). */
  components?: string[];
}

export interface FindingSink {
  add(finding: Finding): void;
  /** Resolves when everything added so far is stored. */
  flush(): Promise<void>;
}

/** Keeps findings in memory (tests, the CLI's summary); at most `limit` of them. */
export class MemoryFindings implements FindingSink {
  readonly findings: Finding[] = [];
  readonly #limit: number;
  dropped = 0;
  constructor(limit = Infinity) {
    this.#limit = limit;
  }
  add(finding: Finding): void {
    if (this.findings.length < this.#limit) this.findings.push(finding);
    else this.dropped++;
  }
  async flush(): Promise<void> {}
}

/** Sends every finding to each sink. */
export function teeFindings(...sinks: FindingSink[]): FindingSink {
  return {
    add: (f) => sinks.forEach((s) => s.add(f)),
    flush: async () => {
      await Promise.all(sinks.map((s) => s.flush()));
    },
  };
}

const BATCH = 500;

/** Writes findings to `walk_findings` in batches; `flush` writes what is buffered. */
export class PgFindings implements FindingSink {
  readonly #db: Queryable;
  readonly #walkId: string;
  #buffer: Finding[] = [];
  #writing: Promise<void> = Promise.resolve();

  constructor(db: Queryable, walkId: string) {
    this.#db = db;
    this.#walkId = walkId;
  }

  add(finding: Finding): void {
    this.#buffer.push(finding);
    if (this.#buffer.length >= BATCH) void this.#write().catch(() => {});
  }

  /** @throws what Postgres throws; the findings of the failed batch are kept for the next flush. */
  async flush(): Promise<void> {
    await this.#write();
  }

  #write(): Promise<void> {
    const next = this.#writing.catch(() => {}).then(async () => {
      const batch = this.#buffer;
      if (batch.length === 0) return;
      this.#buffer = [];
      try {
        await this.#db.query(
          `INSERT INTO walk_findings (walk_id, check_name, severity, node_type, node_key, route, detail)
           SELECT $1, c, s, t, k, r::jsonb, d FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS x(c, s, t, k, r, d)
           ON CONFLICT (walk_id, check_name, node_type, node_key) DO NOTHING`,
          [
            this.#walkId,
            batch.map((f) => f.check),
            batch.map((f) => f.severity),
            batch.map((f) => f.nodeType),
            batch.map((f) => f.key),
            batch.map((f) => JSON.stringify(f.route)),
            batch.map((f) => (f.components?.length ? `${f.detail} [components: ${f.components.join(', ')}]` : f.detail)),
          ],
        );
      } catch (err) {
        this.#buffer = batch.concat(this.#buffer);
        throw err;
      }
    });
    this.#writing = next;
    return next;
  }
}

export interface StoredFinding {
  check: string;
  severity: Severity;
  nodeType: string;
  key: string;
  route: RouteHop[];
  detail: string | null;
}

/** A walk's findings as stored, oldest first. */
export async function listFindings(db: Queryable, walkId: string, limit = 1000): Promise<StoredFinding[]> {
  const { rows } = await db.query<{ check_name: string; severity: Severity; node_type: string; node_key: string; route: RouteHop[] | null; detail: string | null }>(
    `SELECT check_name, severity, node_type, node_key, route, detail FROM walk_findings WHERE walk_id = $1 ORDER BY id LIMIT $2`,
    [walkId, limit],
  );
  return rows.map((r) => ({ check: r.check_name, severity: r.severity, nodeType: r.node_type, key: r.node_key, route: r.route ?? [], detail: r.detail }));
}
