/** The corpus walk's layout: encoding of awkward repo paths, and a real dump of a mirror. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import type pg from 'pg';
import * as CID from '@atcute/cid';
import { freshDatabase } from '../../test/stack.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import type { MadeRepo } from '../../atproto/testing/make-repo.ts';
import { runWalk } from '../run.ts';
import { buildMirror, testDids } from '../../test/mirror.ts';
import { SEPARATOR, corpusPath, decodeSegment, encodeSegment } from './corpus-path.ts';

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)).split(sep).join('/'));
  }
  return out.sort();
}

describe('corpus paths', () => {
  const fanout = Uint8Array.from([0xab, 0xcd, 0xef, 0x01]);

  it('keeps a repo path as directories, percent-encoding each segment', () => {
    const path = 'com.example.odd/100%,ünï/..';
    const rel = corpusPath('Record', path, 'bafykey', fanout);
    expect(rel).toBe(`Record/com.example.odd/100%25%2C%C3%BCn%C3%AF/%2E./${SEPARATOR}/ab/cd/ef/bafykey`);
    const segments = rel.split('/');
    const at = segments.indexOf(SEPARATOR);
    // Everything before the separator is the repo path, and decodes back to it.
    expect(segments.slice(1, at).map(decodeSegment).join('/')).toBe(path);
    for (const s of segments) expect(['', '.', '..']).not.toContain(s);
    // Only the separator holds a comma: no repo path can forge it.
    expect(segments.filter((s) => s.includes(','))).toEqual([SEPARATOR]);
  });

  it('encodes keys with slashes into one name, and has no repo path level for nodes without one', () => {
    expect(corpusPath('Pack', undefined, 'packs/ab/x.car', fanout)).toBe(`Pack/${SEPARATOR}/ab/cd/ef/packs%2Fab%2Fx.car`);
  });

  it('never yields an empty, hidden, dot or overlong segment', () => {
    expect(encodeSegment('')).toBe(',');
    expect(encodeSegment('.hidden')).toBe('%2Ehidden');
    expect(encodeSegment(SEPARATOR)).toBe('%2Erepowalk%2C');
    const long = encodeSegment('é'.repeat(300));
    expect(long.length).toBeLessThanOrEqual(217);
    expect(long).toMatch(/,[0-9a-f]{16}$/);
    expect(encodeSegment('é'.repeat(300))).toBe(long);
    expect(encodeSegment('é'.repeat(301))).not.toBe(long);
  });
});

describe('corpus walk', () => {
  let pool: pg.Pool;
  let dir: string;
  let repos: MadeRepo[];
  const dids = testDids('corpus', 2);

  beforeAll(async () => {
    pool = openPool(await freshDatabase('graph_corpus'));
    await migrate(pool);
    dir = await mkdtemp(join(tmpdir(), 'repowalk-corpus-'));
    repos = await buildMirror({ pool, blobs: new LocalBlobStore(join(dir, 'blobs')) }, dids.map((did) => ({ did, records: 30 })));
  }, 120_000);

  afterAll(async () => {
    await pool?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('dumps every sampled block, verified, under node type, repo path and hash', async () => {
    const out = join(dir, 'out');
    const store = new LocalBlobStore(join(dir, 'blobs'));
    const { totals } = await runWalk({ pool, store }, { type: 'corpus', corpus: { outputDir: out } }, dids.map((did) => ({ type: 'Repo' as const, did })));
    const written = await files(out);
    // One file per distinct block and repo path: the two repos share their records.
    const records = new Set(repos.flatMap((r) => r.records.map((x) => `${x.path}|${x.cid}`)));
    expect(written.filter((f) => f.startsWith('Record/'))).toHaveLength(records.size);
    expect(written.filter((f) => f.startsWith('Commit/'))).toHaveLength(2);
    expect(totals.counters['corpus.files']).toBe(
      (totals.types.Commit?.checked ?? 0) + (totals.types.MstNode?.checked ?? 0) + (totals.types.Record?.checked ?? 0),
    );
    const rec = repos[0]!.records[3]!;
    const digest = CID.fromString(rec.cid).digest.contents;
    const hex = Buffer.from(digest.subarray(0, 3)).toString('hex');
    const path = `Record/${rec.collection}/${rec.rkey}/${SEPARATOR}/${hex.slice(0, 2)}/${hex.slice(2, 4)}/${hex.slice(4, 6)}/${rec.cid}`;
    expect(written).toContain(path);
    const bytes = await readFile(join(out, ...path.split('/')));
    expect(createHash('sha256').update(bytes).digest().equals(Buffer.from(digest))).toBe(true);
    expect(written.some((f) => f.startsWith(`MstNode/${SEPARATOR}/`))).toBe(true);
    expect(written.filter((f) => f.endsWith('~'))).toEqual([]);
  });

  it('dumps only what is sampled', async () => {
    const out = join(dir, 'sampled');
    const store = new LocalBlobStore(join(dir, 'blobs'));
    const { totals } = await runWalk({ pool, store }, { type: 'corpus', corpus: { outputDir: out }, sampling: { rate: 1, offset: 0, pathRegex: '^app\\.bsky\\.feed\\.post/' } }, [{ type: 'Repo', did: dids[0]! }]);
    const written = await files(out);
    expect(written.length).toBe(repos[0]!.records.filter((r) => r.collection === 'app.bsky.feed.post').length);
    expect(written.every((f) => f.startsWith('Record/app.bsky.feed.post/'))).toBe(true);
    expect(totals.counters['corpus.files']).toBe(written.length);
  });
});
