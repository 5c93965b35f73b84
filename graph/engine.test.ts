/**
 * The engine on a real mirror (fresh PostgreSQL, a local blob directory, repos built by the
 * reference implementation and stored by the importer): what a full walk reaches, sampling,
 * filters and pruning, roots of every kind, errors as data, abort, and totals that sum.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { cidBytes } from '../atproto/cid.ts';
import type { MadeRepo } from '../atproto/testing/make-repo.ts';
import { walkGraph, type Visitor } from './engine.ts';
import { MemoryFindings } from './findings.ts';
import { nodeKey, parseRoot, type Node } from './nodes.ts';
import { resolveWalkGraph, GraphFilterError } from './schema.ts';
import { runWalk } from './run.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { addTotals, emptyTotals } from './totals.ts';
import { WalkAbortedError, WalkStepError } from './errors.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
let repos: MadeRepo[];
const dids = testDids('engine', 3);

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_engine'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-graph-'));
  store = new LocalBlobStore(dir);
  repos = await buildMirror({ pool, blobs: store }, dids.map((did, i) => ({ did, records: 150 + 50 * i })));
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const repoRoots = (): Node[] => dids.map((did) => ({ type: 'Repo', did }));

/** A visitor that records what it saw: `Type:key` of every stepped and every sampled node. */
function recorder() {
  const stepped = new Set<string>();
  const sampled = new Set<string>();
  const visitor: Visitor = {
    visit(v, ctx) {
      const id = `${v.node.type}:${nodeKey(v.node)}:${ctx.scope.index}`;
      stepped.add(id);
      if (ctx.sampled) sampled.add(id);
    },
  };
  return { stepped, sampled, visitor };
}

function graphOf(types: string[] = ['all'], extra: { excludeNodes?: string[]; includeEdges?: string[] } = {}) {
  return resolveWalkGraph({ includeNodes: types, ...extra }, new Set(['Repo']), ['deep']);
}

describe('walk engine', () => {
  it('reaches every stored thing of a repo exactly once per root', async () => {
    const r = recorder();
    const { totals } = await walkGraph({ pool, store }, { roots: repoRoots(), graph: graphOf(['deep']), visitor: r.visitor, findings: new MemoryFindings() });
    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM records');
    const records = Number(rows[0]!.n);
    const types = totals.types;
    expect(totals.roots).toBe(3);
    expect(types.Repo?.walked).toBe(3);
    expect(types.Commit?.walked).toBe(3);
    expect(types.RecordRow?.walked).toBe(records);
    expect(types.Event?.walked).toBe(records);
    // Every record block is reached (from its row, its event and its MST leaf) and stepped once.
    expect(types.Record?.walked).toBe(records);
    expect(types.Record?.children).toBeGreaterThan(0);
    const mstNodes = (await pool.query<{ n: string }>('SELECT sum(blocks_count) - sum(records_count) - count(*) AS n FROM repos')).rows[0]!.n;
    expect(types.MstNode?.walked).toBe(Number(mstNodes));
    // One pack per import.
    // One pack per import, and repos that share blocks with an earlier one reach its pack too.
    expect(types.Pack?.walked).toBeGreaterThanOrEqual(3);
    expect(r.stepped.size).toBe(totals.nodes);
    expect(totals.nodes).toBe(Object.values(types).reduce((n, t) => n + t.walked, 0));
  });

  it('steps from a pack to every block its index holds', async () => {
    const graph = graphOf(['Repo', 'Commit', 'Pack', 'Block']);
    expect(graph.edges.has('PackToBlock')).toBe(true);
    const r = recorder();
    const { totals } = await walkGraph({ pool, store }, { roots: repoRoots(), graph, visitor: r.visitor, findings: new MemoryFindings() });
    // Each root reaches its head's pack, and through it that pack's blocks.
    const { rows } = await pool.query<{ repo: number; blocks: string }>(
      `SELECT array_position($1::text[], r.did) AS repo, count(*) AS blocks FROM repos r JOIN blocks h ON h.cid = r.head_cid JOIN blocks b ON b.pack_id = h.pack_id
       WHERE r.did = ANY($1::text[]) GROUP BY r.did`,
      [dids],
    );
    expect(rows).toHaveLength(dids.length);
    expect(totals.types.Pack?.walked).toBe(dids.length);
    expect(totals.types.Block?.walked).toBe(rows.reduce((n, x) => n + Number(x.blocks), 0));
  });

  it("keeps a repo's record rows and events out of the visited set, and steps each once", async () => {
    const r = recorder();
    const res = await walkGraph({ pool, store }, { roots: [{ type: 'Repo', did: dids[2]! }], graph: graphOf(['deep']), visitor: r.visitor, findings: new MemoryFindings() });
    const types = res.totals.types;
    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM records WHERE did = $1', [dids[2]]);
    expect(types.RecordRow?.walked).toBe(Number(rows[0]!.n));
    expect(types.Event?.walked).toBe(Number(rows[0]!.n));
    // Stepped once each (the recorder keys them by row).
    expect([...r.stepped].filter((k) => k.startsWith('RecordRow:')).length).toBe(types.RecordRow?.walked);
    // The set holds every other node: a Repo's edges (its head, its rows) name distinct things, so they skip it.
    expect(types.Commit?.walked).toBe(1);
    expect(res.visited.nodes).toBe(res.totals.nodes - types.RecordRow!.walked - types.Event!.walked - 1);
  });

  it('samples every node exactly once over offsets 0..R-1', async () => {
    const full = recorder();
    const graph = graphOf(['deep']);
    const all = await walkGraph({ pool, store }, { roots: repoRoots(), graph, visitor: full.visitor, findings: new MemoryFindings() });
    const union = new Set<string>();
    let checked = 0;
    for (let offset = 0; offset < 4; offset++) {
      const r = recorder();
      const part = await walkGraph({ pool, store }, { roots: repoRoots(), graph, visitor: r.visitor, findings: new MemoryFindings(), sampling: { rate: 4, offset } });
      // Sampling decides what is checked, not what is walked.
      expect(part.totals.nodes).toBe(all.totals.nodes);
      expect(r.sampled.size).toBeGreaterThan(0);
      expect(r.sampled.size).toBeLessThan(all.totals.nodes);
      for (const id of r.sampled) {
        expect(union.has(id)).toBe(false);
        union.add(id);
      }
      checked += Object.values(part.totals.types).reduce((n, t) => n + t.checked, 0);
    }
    expect(union).toEqual(full.sampled);
    expect(checked).toBe(all.totals.nodes);
  });

  it('samples by repo path regex: only nodes reached over a matching path', async () => {
    const r = recorder();
    await walkGraph({ pool, store }, {
      roots: repoRoots(),
      graph: graphOf(['deep']),
      visitor: r.visitor,
      findings: new MemoryFindings(),
      sampling: { rate: 1, offset: 0, pathRegex: /^app\.bsky\.feed\.like\// },
    });
    const types = new Set([...r.sampled].map((id) => id.split(':')[0]));
    expect([...types].sort()).toEqual(['Event', 'Record', 'RecordRow']);
    const likes = repos.flatMap((repo) => repo.records.filter((x) => x.collection === 'app.bsky.feed.like'));
    expect([...r.sampled].filter((id) => id.startsWith('RecordRow:')).length).toBe(likes.length);
  });

  it('filters node and edge types and prunes what becomes unreachable', () => {
    const g = resolveWalkGraph({ includeNodes: ['deep'], excludeNodes: ['Commit'] }, new Set(['Repo']), ['deep']);
    expect(g.nodes.has('MstNode')).toBe(false);
    expect(g.pruned).toContain('MstNode');
    expect(g.nodes.has('Record')).toBe(true); // still reached from the record index and the events
    const g2 = resolveWalkGraph({ includeNodes: ['shallow', 'Pack'], excludeEdges: ['RecordToPack', 'MstNodeToPack'] }, new Set(['Repo']), ['deep']);
    expect(g2.edges.has('CommitToPack')).toBe(true);
    expect([...g2.edges]).not.toContain('RecordToPack');
    expect(g2.edges.has('RecordToRecord')).toBe(false); // off unless named
    expect(() => resolveWalkGraph({ includeNodes: ['Nope'] }, new Set(['Repo']), ['deep'])).toThrow(GraphFilterError);
    expect(() => resolveWalkGraph({ includeNodes: ['blobstore'] }, new Set(['Repo']), ['deep'])).toThrow(/roots are of type Repo/);
  });

  it('walks only the MST with shallow and fewer node types', async () => {
    const { totals } = await runWalk({ pool, store }, { type: 'corpus', corpus: { outputDir: join(dir, 'unused') }, filter: { includeNodes: ['Repo', 'Commit', 'MstNode'] } }, repoRoots().slice(0, 1));
    expect(Object.keys(totals.types).sort()).toEqual(['Commit', 'MstNode', 'Repo']);
  });

  it('takes roots of every node type', async () => {
    const repo = repos[0]!;
    const rec = repo.records[0]!;
    const { rows } = await pool.query<{ key: string; id: string }>('SELECT p.key, e.id FROM packs p, events e WHERE e.did = $1 ORDER BY p.id, e.id LIMIT 1', [repo.did]);
    const roots = [
      `Commit:${repo.commitCid}`,
      `MstNode:${repo.dataCid}`,
      `Record:${rec.cid}`,
      `RecordRow:${repo.did}/${rec.collection}/${rec.rkey}`,
      `Event:${rows[0]!.id}`,
      `Pack:${rows[0]!.key}`,
      `Block:${rec.cid}`,
    ].map(parseRoot);
    const g = resolveWalkGraph({ includeNodes: ['all'] }, new Set(roots.map((r) => r.type)), ['all']);
    const { totals } = await walkGraph({ pool, store }, { roots, graph: g, visitor: recorder().visitor, findings: new MemoryFindings() });
    expect(totals.roots).toBe(roots.length);
    expect(totals.types.Block?.walked).toBeGreaterThan(1); // the pack's blocks
    expect(() => parseRoot('Nope:x')).toThrow(/known node type/);
    expect(() => parseRoot('Record:notacid')).toThrow(/not a CIDv1/);
  });

  it('stops at a failed step with the route, or records it and goes on with errorAsData', async () => {
    const repo = repos[1]!;
    // An MST node the index loses: the tree still names it.
    const { rows } = await pool.query<{ cid: Buffer }>(
      `SELECT b.cid FROM blocks b WHERE b.refcount = 0 AND b.pack_id = (SELECT b2.pack_id FROM blocks b2 WHERE b2.cid = $1) AND b.cid <> $2 LIMIT 1`,
      [cidBytes(repo.commitCid), cidBytes(repo.dataCid)],
    );
    const lost = rows[0]!.cid;
    const saved = (await pool.query('DELETE FROM blocks WHERE cid = $1 RETURNING *', [lost])).rows[0];
    try {
      const roots: Node[] = [{ type: 'Repo', did: repo.did }];
      const err = await walkGraph({ pool, store }, { roots, graph: graphOf(['shallow']), visitor: recorder().visitor, findings: new MemoryFindings() }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WalkStepError);
      expect((err as WalkStepError).route).toMatch(/^Repo:did:plc:\S+ -RepoToCommit-> Commit:\S+ -CommitToMstNode-> MstNode:/);
      expect((err as Error).message).toMatch(/not in the block index/);

      const findings = new MemoryFindings();
      const { totals } = await walkGraph({ pool, store }, { roots, graph: graphOf(['shallow']), visitor: recorder().visitor, findings, errorAsData: true });
      expect(findings.findings).toHaveLength(1);
      const f = findings.findings[0]!;
      expect(f).toMatchObject({ check: 'block-not-indexed', nodeType: 'MstNode', severity: 'error' });
      expect(f.route[0]).toEqual({ node: `Repo:${repo.did}` });
      expect(f.route.at(-1)!.node).toBe(`MstNode:${f.key}`);
      expect(totals.types.MstNode?.errors).toBe(1);
      expect(totals.findings['block-not-indexed:error']).toBe(1);
    } finally {
      await pool.query('INSERT INTO blocks (cid, pack_id, byte_offset, byte_length, refcount, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
        saved.cid, saved.pack_id, saved.byte_offset, saved.byte_length, saved.refcount, saved.created_at,
      ]);
    }
  });

  it('aborts with the totals of the roots done, and totals of parts sum to the whole', async () => {
    const graph = graphOf(['deep']);
    const whole = await walkGraph({ pool, store }, { roots: repoRoots(), graph, visitor: recorder().visitor, findings: new MemoryFindings() });
    const parts = emptyTotals();
    for (const root of repoRoots()) {
      addTotals(parts, (await walkGraph({ pool, store }, { roots: [root], graph, visitor: recorder().visitor, findings: new MemoryFindings() })).totals);
    }
    expect(parts).toEqual(whole.totals);

    const ac = new AbortController();
    const done: number[] = [];
    const err = await walkGraph({ pool, store }, {
      roots: repoRoots(),
      graph,
      visitor: recorder().visitor,
      findings: new MemoryFindings(),
      rootConcurrency: 1,
      signal: ac.signal,
      onRootDone: (i) => {
        done.push(i);
        ac.abort(new Error('enough'));
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WalkAbortedError);
    expect(done).toEqual([0]);
    expect(((err as WalkAbortedError).totals as { roots: number }).roots).toBe(1);
  });

  it('reports progress in one line shape and a final summary', async () => {
    const lines: string[] = [];
    const nodes: number[] = [];
    // Every blobstore read takes 20 ms, so the 5 ms ticks are sure to fire during the walk.
    const slow = new Proxy(store, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver) as unknown;
        if (typeof v !== 'function') return v;
        return async (...args: unknown[]) => {
          await new Promise((r) => setTimeout(r, 20));
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    await walkGraph({ pool, store: slow }, {
      roots: repoRoots(),
      graph: graphOf(['deep']),
      visitor: recorder().visitor,
      findings: new MemoryFindings(),
      progress: { label: 'walk test', intervalMs: 5, emit: (l, snap) => (lines.push(l), nodes.push(snap.totals.nodes)) },
    });
    const shape = /^walk test( done)?: \d+\.\ds [\d,]+ nodes [\d,]+\/s [\d.]+ \S*B [\d.]+ \S*B\/s \d+ roots \d+ findings \| /;
    const ticks = lines.slice(0, -1);
    expect(ticks.length).toBeGreaterThan(0);
    // Every tick has the final line's shape, is not marked done, and counts never go back.
    for (const t of ticks) {
      expect(t).toMatch(shape);
      expect(t).not.toContain(' done:');
    }
    expect(nodes).toEqual([...nodes].sort((a, b) => a - b));
    expect(Number(ticks.at(-1)!.match(/ ([\d,]+) nodes /)![1]!.replace(/,/g, ''))).toBe(nodes.at(-2));
    const last = lines.at(-1)!;
    expect(last).toMatch(/^walk test done: \d+\.\ds [\d,]+ nodes [\d,]+\/s [\d.]+ \S*B [\d.]+ \S*B\/s 3 roots 0 findings \| Repo 3\/3\/[\d,]+ Commit 3\/3\/[\d,]+ MstNode /);
    expect(nodes.at(-1)).toBeGreaterThan(nodes[0]!);
  });
});

describe('walk engine on a repo larger than a chunk of children', () => {
  let bigPool: pg.Pool;
  let bigDir: string;
  let bigStore: LocalBlobStore;
  const [did] = testDids('engine-big', 1) as [string];
  const RECORDS = 2_600; // two chunks of 1,024 record rows and a part, and as many events

  beforeAll(async () => {
    bigPool = openPool(await freshDatabase('graph_engine_big'));
    await migrate(bigPool);
    bigDir = await mkdtemp(join(tmpdir(), 'repowalk-graph-big-'));
    bigStore = new LocalBlobStore(bigDir);
    await buildMirror({ pool: bigPool, blobs: bigStore }, [{ did, records: RECORDS }]);
  }, 120_000);

  afterAll(async () => {
    await bigPool?.end();
    if (bigDir) await rm(bigDir, { recursive: true, force: true });
  });

  it("steps a repo's events and record rows in the order one list of its edges would give, each once", async () => {
    const order: string[] = [];
    const visitor: Visitor = {
      visit(v) {
        if (v.node.type === 'Event' || v.node.type === 'RecordRow') order.push(`${v.node.type}:${nodeKey(v.node)}`);
      },
    };
    const { totals } = await walkGraph({ pool: bigPool, store: bigStore }, { roots: [{ type: 'Repo', did }], graph: graphOf(['deep']), visitor, findings: new MemoryFindings() });
    const events = (await bigPool.query<{ id: string }>('SELECT id FROM events WHERE did = $1 ORDER BY id', [did])).rows.map((r) => `Event:${r.id}`);
    const rows = (await bigPool.query<{ collection: string; rkey: string }>('SELECT collection, rkey FROM records WHERE did = $1 ORDER BY collection, rkey', [did])).rows.map(
      (r) => `RecordRow:${did}/${r.collection}/${r.rkey}`,
    );
    expect(rows).toHaveLength(RECORDS);
    // The stack takes the last edge first: the events from the newest, then the rows from the last.
    expect(order).toEqual([...events.reverse(), ...rows.reverse()]);
    expect(totals.types.Repo?.children).toBe(1 + RECORDS + events.length);
    expect(totals.types.Record?.walked).toBe(RECORDS);
  });

  it('reads a pack larger than the whole-pack limit a window at a time, blocks across a window end by themselves', async () => {
    const whole = await runWalk({ pool: bigPool, store: bigStore }, { type: 'validate' }, [{ type: 'Repo', did }]);
    expect(whole.blockRequests).toBe(1);
    const { rows } = await bigPool.query<{ blocks: string; size: string }>('SELECT (SELECT count(*) FROM blocks) AS blocks, (SELECT max(size_bytes) FROM packs) AS size');
    const blocks = Number(rows[0]!.blocks);
    const size = Number(rows[0]!.size);
    for (const packWindow of [64 * 1024, 1_000]) {
      const findings = new MemoryFindings();
      const r = await runWalk({ pool: bigPool, store: bigStore }, { type: 'validate' }, [{ type: 'Repo', did }], { findings, blockSource: { wholePackMax: 1024, packWindow } });
      expect(findings.findings).toEqual([]);
      expect(r.totals.nodes).toBe(whole.totals.nodes);
      expect(r.totals.bytes).toBe(whole.totals.bytes);
      // A request per window, and one per block that crosses a window's end.
      expect(r.blockRequests).toBeGreaterThanOrEqual(Math.ceil(size / packWindow));
      expect(r.blockRequests).toBeLessThan(packWindow > 10_000 ? blocks / 10 : blocks);
    }
  });

  it('holds a pack read by windows whole past the cache budget, up to the large-pack budget', async () => {
    const size = Number((await bigPool.query<{ size: string }>('SELECT max(size_bytes) AS size FROM packs')).rows[0]!.size);
    const packWindow = 16 * 1024;
    const windows = Math.ceil(size / packWindow);
    const walk = (largePackCacheBytes: number) =>
      runWalk({ pool: bigPool, store: bigStore }, { type: 'validate' }, [{ type: 'Repo', did }], { blockSource: { wholePackMax: 1024, packWindow, packCacheBytes: 0, largePackCacheBytes } });
    // Each window once, and each block that crosses a window's end by itself (at most one a window).
    const held = await walk(size);
    expect(held.blockRequests).toBeLessThanOrEqual(2 * windows);
    // With no room, a window goes as the next comes, and the walk, which jumps about the pack, reads windows again.
    const thrashed = await walk(0);
    expect(thrashed.blockRequests).toBeGreaterThan(2 * windows);
    expect(thrashed.totals.nodes).toBe(held.totals.nodes);
  });
});
