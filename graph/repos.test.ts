/** Slicing and paging repos: every repo in exactly one slice, pages in DID order, the SQL and JS slice functions agree. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { countRepos, repoPage, sliceOf } from './repos.ts';

let pool: pg.Pool;
const dids = Array.from({ length: 200 }, (_, i) => `did:plc:slice${String(i).padStart(4, '0')}x${(i * 7919).toString(36)}`);

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_repos'));
  await migrate(pool);
  await pool.query('INSERT INTO repos (did) SELECT unnest($1::text[])', [dids]);
  await pool.query(`UPDATE repos SET updated_at = now() - interval '1 day'`);
});

afterAll(async () => {
  await pool?.end();
});

async function allPages(slice: number, slices: number, limit: number, changedSince?: Date): Promise<string[][]> {
  const pages: string[][] = [];
  let after: string | undefined;
  for (;;) {
    const p = await repoPage(pool, { slice, slices, after, limit, changedSince });
    pages.push(p.dids);
    if (p.cursor === undefined) return pages;
    after = p.cursor;
  }
}

describe('repo slices and pages', () => {
  it('puts every repo in exactly one of N slices, the one sliceOf names, paged in DID order', async () => {
    const slices = 7;
    const seen: string[] = [];
    for (let s = 0; s < slices; s++) {
      const pages = await allPages(s, slices, 6);
      for (const page of pages.slice(0, -1)) expect(page).toHaveLength(6);
      const flat = pages.flat();
      expect(flat).toEqual([...flat].sort());
      for (const did of flat) expect(sliceOf(did, slices)).toBe(s);
      expect(await countRepos(pool, { slice: s, slices })).toBe(flat.length);
      seen.push(...flat);
    }
    expect(seen.sort()).toEqual([...dids].sort());
    // Roughly even: no slice holds more than twice its share.
    for (let s = 0; s < slices; s++) expect(seen.filter((d) => sliceOf(d, slices) === s).length).toBeLessThan((2 * dids.length) / slices);
  });

  it('a full last page ends the slice without an empty one after it', async () => {
    const n = await countRepos(pool, { slice: 0, slices: 1 });
    const pages = await allPages(0, 1, n);
    expect(pages).toHaveLength(1);
  });

  it('tail passes see only repos changed since a time', async () => {
    const since = new Date(Date.now() - 60_000);
    await pool.query('UPDATE repos SET updated_at = now() WHERE did = ANY($1)', [dids.slice(0, 3)]);
    const changed = (await allPages(0, 1, 50, since)).flat();
    expect(changed).toEqual(dids.slice(0, 3).sort());
    expect(await countRepos(pool, { slice: 0, slices: 1, changedSince: since })).toBe(3);
  });
});
