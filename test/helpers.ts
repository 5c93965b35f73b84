/** Helpers the integration tests share: waiting for a condition, starting a worker process, and checking the mirror's books (refcounts, a validate walk). */
import { spawn, type ChildProcess } from 'node:child_process';
import type pg from 'pg';
import { toBase32 } from '@atcute/multibase';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { MemoryFindings } from '../graph/findings.ts';
import { runWalk } from '../graph/run.ts';

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `probe` every 200 ms until it returns something other than undefined or false, and
 * returns that; throws naming `what` (and the probe's last error) after `timeoutMs`.
 */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(200);
  }
}

/**
 * Blocks whose refcount differs from the references stored rows hold (each records row, each
 * repos.head_cid, each events.cid: the importer's definition), and references that name no
 * indexed block. Empty when the books are right; at most 20 rows.
 */
export async function refcountProblems(db: pg.Pool): Promise<Array<{ cid: string; refcount: number | null; references: number }>> {
  const { rows } = await db.query<{ cid: Buffer; refcount: string | null; refs: string }>(`
    WITH refs AS (
      SELECT cid, count(*) AS n FROM (
        SELECT cid FROM records
        UNION ALL SELECT head_cid FROM repos WHERE head_cid IS NOT NULL
        UNION ALL SELECT cid FROM events WHERE cid IS NOT NULL
      ) r GROUP BY cid
    )
    SELECT coalesce(b.cid, refs.cid) AS cid, b.refcount, coalesce(refs.n, 0) AS refs
    FROM blocks b FULL OUTER JOIN refs ON refs.cid = b.cid
    WHERE b.cid IS NULL OR b.refcount <> coalesce(refs.n, 0)
    LIMIT 20`);
  return rows.map((r) => ({ cid: `b${toBase32(r.cid)}`, refcount: r.refcount === null ? null : Number(r.refcount), references: Number(r.refs) }));
}

/**
 * A validate walk (every check) over every repo the mirror holds, or over `dids`: its findings
 * as `check nodeType key: message` lines, empty when the mirror is sound.
 */
export async function validateFindings(stores: { pool: pg.Pool; store: BlobStore }, dids?: string[]): Promise<string[]> {
  const held = dids ?? (await stores.pool.query<{ did: string }>(`SELECT did FROM repos WHERE head_cid IS NOT NULL ORDER BY did`)).rows.map((r) => r.did);
  if (held.length === 0) throw new Error('validateFindings: the mirror holds no repo to walk');
  const findings = new MemoryFindings();
  const { totals } = await runWalk(stores, { type: 'validate' }, held.map((did) => ({ type: 'Repo', did })), { findings });
  // Not a vacuous pass: every held repo's records were reached.
  if (!(totals.types.Record?.walked ?? 0)) throw new Error('validateFindings: the walk reached no record');
  return findings.findings.map((f) => `${f.severity} ${f.check} ${f.nodeType} ${f.key}: ${f.detail}`);
}

/**
 * Spawns a `repowalk worker` process (`command` with `args`, stdout and stderr collected) and
 * resolves once it prints `ready` (by default that it is running its jobs); rejects with what it
 * printed if it exits first or is not ready within `timeoutMs`. `exited` settles when it ends.
 */
export async function spawnReadyWorker(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { ready?: string; timeoutMs?: number } = {},
): Promise<{ child: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: string | null }> }> {
  const ready = opts.ready ?? 'worker running jobs';
  let output = '';
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker not ready:\n${output}`)), opts.timeoutMs ?? 90_000);
    const check = () => {
      if (output.includes(ready)) {
        clearTimeout(timer);
        resolve();
      } else if (child.exitCode !== null) {
        clearTimeout(timer);
        reject(new Error(`worker exited ${child.exitCode}:\n${output}`));
      } else setTimeout(check, 100);
    };
    check();
  });
  return { child, output: () => output, exited };
}
