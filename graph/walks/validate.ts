/**
 * The validate walk: named checks over what a walk steps, each selectable (`checks`), each
 * reporting findings under its own name on the node at fault.
 *
 * | check              | on        | finds                                                              |
 * |--------------------|-----------|--------------------------------------------------------------------|
 * | `block-hash`       | blocks    | bytes in the pack that do not hash to the block's CID              |
 * | `commit-signature` | Commit    | a commit that does not decode or whose signature does not verify with `repos.signing_key` |
 * | `mst`              | MstNode, Commit | a broken MST invariant; a commit whose data root is not `repos.data_cid` |
 * | `index-mst`        | RecordRow | the record index and the MST leaves under the head disagree (either way, or on a CID) |
 * | `record-block`     | RecordRow | an index row naming a block the block index lacks                  |
 * | `refcount`         | blocks    | `blocks.refcount` ≠ the references that exist (records rows, repo heads, events) |
 * | `event-block`      | Event     | an event naming a block the block index lacks                      |
 * | `repo-state`       | Repo, Commit | a repos row at odds with itself, its head commit, its record index or its counts |
 * | `strong-ref` (info)| Record    | a strong ref into a repo we mirror whose record version we do not hold |
 *
 * Checks run on sampled nodes. `index-mst` is a check of the repo's sampled Repo node over the
 * leaves of every MstNode under it, and is not judged for a root where a step failed or the tree
 * could not be read whole; it compares sums of a seeded hash of each (path, CID) and matches
 * the two sides up only when they differ.
 *
 * `refcount` compares each block's stored refcount with the references counted in the same
 * statement (one snapshot, so an import committing meanwhile cannot make them disagree): for
 * the packs a repo's Repo step reads in bulk, in Postgres and in the same snapshot as the
 * repo's rows, returning only disagreements; for blocks in other packs, per root when it is
 * done. Without an index on `records.cid` and `events.cid` these scan both tables once per
 * repo; with one, they look blocks up.
 */
import type pg from 'pg';
import { verifyCommitSignature } from '../../atproto/commit.ts';
import { cidFromString, cidToString } from '../../atproto/cid.ts';
import { Batcher } from '../batch.ts';
import { cidMapKey } from '../blocks.ts';
import type { Visitor, VisitContext } from '../engine.ts';
import type { Node } from '../nodes.ts';
import type { Route } from '../route.ts';
import type { WalkGraph } from '../schema.ts';
import { VALIDATE_CHECKS, type ValidateCheck } from './names.ts';
import type { IndexRow, RefcountScan, RootScope, StepData } from '../steps/context.ts';
import { pair, pairHash } from '../hash.ts';

export { VALIDATE_CHECKS, type ValidateCheck } from './names.ts';

export interface ValidateOptions {
  /** Checks to run; default all. */
  checks?: readonly ValidateCheck[];
}

export class UnknownCheckError extends Error {
  override name = 'UnknownCheckError';
}

/** @throws {UnknownCheckError} naming the unknown check and the known ones. */
export function parseChecks(names: readonly string[] | undefined): Set<ValidateCheck> {
  if (!names || names.length === 0) return new Set(VALIDATE_CHECKS);
  const out = new Set<ValidateCheck>();
  for (const n of names) {
    if (!(VALIDATE_CHECKS as readonly string[]).includes(n)) throw new UnknownCheckError(`unknown check ${JSON.stringify(n)}; known: ${VALIDATE_CHECKS.join(', ')}`);
    out.add(n as ValidateCheck);
  }
  return out;
}

/** What the index-vs-MST check gathers for one root. */
interface RootLeaves {
  /** The Repo node was sampled and its record index read: the check is due. */
  due: boolean;
  did: string;
  index: IndexRow[];
  /** The leaves of every MST node under the head, as the steps returned them. */
  leaves: { path: string; cid: Uint8Array }[][];
  /** The head was walked, so the leaves are the tree's. */
  sawCommit: boolean;
  /** A node of the tree could not be read whole: the leaves are not the tree's. */
  broken: boolean;
}

/**
 * The validate visitor. `graph` is the walk's: the index-vs-MST check needs the whole tree
 * walked (CommitToMstNode and MstNodeToMstNode) and is skipped, and counted as such, otherwise.
 * @throws {UnknownCheckError} on an unknown check name.
 */
export function validateVisitor(pool: pg.Pool, opts: ValidateOptions = {}, graph?: WalkGraph): Visitor {
  const checks = parseChecks(opts.checks);
  const treeWalked = !graph || (graph.edges.has('CommitToMstNode') && graph.edges.has('MstNodeToMstNode'));
  const on = (c: ValidateCheck) => checks.has(c) && (c !== 'index-mst' || treeWalked);
  /** The Repo step's bulk refcount comparison, per root. */
  const scanOf = new WeakMap<RootScope, RefcountScan>();
  /** Blocks outside the scanned packs, checked one by one when the root is done, with the routes to them. */
  const refcountsOf = new WeakMap<RootScope, { cids: Uint8Array[]; routes: Route[] }>();
  const mirrored = new Batcher<string, boolean>(async (dids) => {
    const { rows } = await pool.query<{ did: string }>(`SELECT did FROM repos WHERE did = ANY($1::text[]) AND status IN ('active', 'gone')`, [dids]);
    const set = new Set(rows.map((r) => r.did));
    return dids.map((d) => set.has(d));
  }, { serial: true });
  const stored = new Batcher<Uint8Array, boolean>(async (cids) => {
    const { rows } = await pool.query<{ cid: Buffer }>('SELECT cid FROM blocks WHERE cid = ANY($1::bytea[])', [cids]);
    const set = new Set(rows.map((r) => cidMapKey(r.cid)));
    return cids.map((c) => set.has(cidMapKey(c)));
  }, { serial: true });
  const leavesOf = new WeakMap<RootScope, RootLeaves>();

  const blockChecks = (node: Extract<Node, { cid: Uint8Array }>, data: StepData['Block'], ctx: VisitContext) => {
    if (on('block-hash') && data.bytes && !data.hashOk) {
      ctx.report({
        check: 'block-hash',
        detail: `bytes at ${data.loc.packKey}+${data.loc.offset} (${data.loc.length} bytes) do not hash to ${cidToString(node.cid, 0)}`,
      });
    }
    if (on('refcount')) {
      const scan = scanOf.get(ctx.scope);
      if (scan?.packs.has(data.loc.packId)) {
        const m = scan.mismatches.size > 0 ? scan.mismatches.get(cidMapKey(node.cid)) : undefined;
        if (m) ctx.report({ check: 'refcount', detail: `refcount is ${m.refcount}, but ${m.refs} stored rows reference the block` });
        return;
      }
      let pending = refcountsOf.get(ctx.scope);
      if (!pending) refcountsOf.set(ctx.scope, (pending = { cids: [], routes: [] }));
      pending.cids.push(node.cid);
      pending.routes.push(ctx.route);
    }
  };

  return {
    needs: {
      recordIndex: on('index-mst') || on('repo-state'),
      collectionCounts: on('repo-state'),
      recordRefs: on('strong-ref'),
      blockBytes: on('block-hash') || on('mst') || on('index-mst'),
      refcounts: on('refcount'),
    },

    visit(v, ctx) {
      switch (v.node.type) {
        case 'Repo': {
          const data = v.data as StepData['Repo'];
          if (data.refcounts) scanOf.set(ctx.scope, data.refcounts);
          if (ctx.sampled && data.records && data.row?.headCid && on('index-mst')) {
            leavesOf.set(ctx.scope, { due: true, did: data.row.did, index: data.records, leaves: [], sawCommit: false, broken: false });
          }
          if (ctx.sampled && on('repo-state')) {
            const problems = repoStateProblems(data);
            if (problems.length) ctx.report({ check: 'repo-state', detail: problems.join('; ') });
          }
          return;
        }
        case 'Commit': {
          const data = v.data as StepData['Commit'];
          const node = v.node;
          const leaves = leavesOf.get(ctx.scope);
          if (leaves && node.repo?.did === leaves.did) leaves.sawCommit = data.commit !== null;
          if (!ctx.sampled) return;
          blockChecks(node, data, ctx);
          if (!data.hashOk) return;
          if (data.decodeError !== null) {
            if (on('commit-signature')) ctx.report({ check: 'commit-signature', detail: `not a valid commit: ${data.decodeError}` });
            return;
          }
          const commit = data.commit;
          if (!commit) return;
          const repo = node.repo;
          if (on('commit-signature')) {
            ctx.defer(async () => {
              const key = repo?.signingKey ?? (await signingKeyOf(pool, commit.did));
              if (!key) {
                ctx.report({ check: 'commit-signature', detail: `no signing key stored for ${commit.did}` });
                return;
              }
              try {
                await verifyCommitSignature(commit, cidToString(node.cid, 0), key);
              } catch (err) {
                ctx.report({ check: 'commit-signature', detail: (err as Error).message });
              }
            });
          }
          if (repo) {
            if (on('mst') && repo.dataCid && cidToString(repo.dataCid, 0) !== commit.data) {
              ctx.report({ check: 'mst', detail: `the commit's data root is ${commit.data}, repos.data_cid is ${cidToString(repo.dataCid, 0)}` });
            }
            if (on('repo-state') && repo.rev !== commit.rev) {
              ctx.report({ check: 'repo-state', detail: `the head commit's rev is ${commit.rev}, repos.rev is ${repo.rev}` });
            }
          }
          return;
        }
        case 'MstNode': {
          const data = v.data as StepData['MstNode'];
          const leaves = leavesOf.get(ctx.scope);
          if (leaves) {
            leaves.leaves.push(data.leaves);
            if (!data.bytes || !data.hashOk || data.problems.length > 0) leaves.broken = true;
          }
          if (!ctx.sampled) return;
          blockChecks(v.node, data, ctx);
          if (on('mst') && data.problems.length > 0) ctx.report({ check: 'mst', detail: data.problems.join('; ') });
          return;
        }
        case 'Record': {
          const data = v.data as StepData['Record'];
          if (!ctx.sampled) return;
          blockChecks(v.node, data, ctx);
          if (on('strong-ref') && data.refs && data.refs.strongRefs.length > 0) {
            const refs = data.refs.strongRefs;
            ctx.defer(async () => {
              const unresolved: string[] = [];
              for (const ref of refs) {
                if (!(await mirrored.load(ref.did))) continue;
                const cid = cidFromString(ref.cid);
                if (!cid || !(await stored.load(cid))) unresolved.push(`${ref.uri} (${ref.cid})`);
              }
              if (unresolved.length) {
                ctx.report({ check: 'strong-ref', severity: 'info', detail: `strong refs into mirrored repos whose record version is not stored: ${unresolved.join(', ')}` });
              }
            });
          }
          return;
        }
        case 'Block':
          if (ctx.sampled) blockChecks(v.node, v.data as StepData['Block'], ctx);
          return;
        case 'RecordRow': {
          const row = (v.data as StepData['RecordRow']).row;
          if (ctx.sampled && on('record-block') && row) {
            if (!row.loc) ctx.report({ check: 'record-block', detail: `names block ${cidToString(row.cid, 0)}, which is not in the block index` });
            else if (row.loc.packKey === null) ctx.report({ check: 'record-block', detail: `block ${cidToString(row.cid, 0)} is indexed in pack ${row.loc.packId}, which has no packs row` });
          }
          return;
        }
        case 'Event': {
          const row = (v.data as StepData['Event']).row;
          if (ctx.sampled && on('event-block') && row?.cid) {
            if (!row.loc) ctx.report({ check: 'event-block', detail: `${row.kind} event names block ${cidToString(row.cid, 0)}, which is not in the block index` });
            else if (row.loc.packKey === null) ctx.report({ check: 'event-block', detail: `block ${cidToString(row.cid, 0)} is indexed in pack ${row.loc.packId}, which has no packs row` });
          }
          return;
        }
        case 'Blob':
        case 'Pack':
          return;
      }
    },

    async rootDone(scope, ctx) {
      const refs = refcountsOf.get(scope);
      refcountsOf.delete(scope);
      scanOf.delete(scope);
      if (refs) {
        for (const m of await refcountMismatches(pool, refs.cids)) {
          ctx.report({ check: 'refcount', route: refs.routes[m.index]!, node: refs.routes[m.index]!.node, detail: `refcount is ${m.refcount}, but ${m.refs} stored rows reference the block` });
        }
      }
      const l = leavesOf.get(scope);
      leavesOf.delete(scope);
      if (!l?.due) return;
      if (ctx.incomplete || !l.sawCommit || l.broken) {
        ctx.count('validate.index-mst.skipped');
        return;
      }
      const row = (path: string): Node => {
        const slash = path.indexOf('/');
        return { type: 'RecordRow', did: l.did, collection: path.slice(0, slash), rkey: path.slice(slash + 1) };
      };
      // First compare sums of a seeded hash of each (path, CID): equal sums and counts mean the
      // same pairs, and cost no Map. Only when they differ are the two sides matched up.
      let count = 0;
      let a = 0;
      let b = 0;
      for (const r of l.index) {
        pairHash(`${r.collection}/${r.rkey}`, r.cid);
        a = (a + pair[0]!) | 0;
        b = (b + pair[1]!) | 0;
      }
      for (const group of l.leaves) {
        for (const leaf of group) {
          pairHash(leaf.path, leaf.cid);
          a = (a - pair[0]!) | 0;
          b = (b - pair[1]!) | 0;
          count++;
        }
      }
      if (a === 0 && b === 0 && count === l.index.length) return;
      const index = new Map(l.index.map((r) => [`${r.collection}/${r.rkey}`, cidMapKey(r.cid)]));
      const leaves = new Map(l.leaves.flatMap((g) => g.map((x) => [x.path, cidMapKey(x.cid)] as const)));
      // CIDs are compared as their bytes (`cidMapKey`) and spelled out only for a finding.
      const b32 = (key: string) => cidToString(Buffer.from(key, 'latin1'), 0);
      for (const [path, cid] of index) {
        const leaf = leaves.get(path);
        if (leaf === undefined) ctx.report({ check: 'index-mst', node: row(path), detail: `in the record index (${b32(cid)}) but not in the MST under the head` });
        else if (leaf !== cid) ctx.report({ check: 'index-mst', node: row(path), detail: `the record index says ${b32(cid)}, the MST says ${b32(leaf)}` });
      }
      for (const [path, cid] of leaves) {
        if (!index.has(path)) ctx.report({ check: 'index-mst', node: row(path), detail: `in the MST under the head (${b32(cid)}) but not in the record index` });
      }
    },
  };
}

/** What is wrong with a repo's row, record index and counts, as sentences. */
export function repoStateProblems(data: StepData['Repo']): string[] {
  const row = data.row;
  if (!row) return ['no repos row'];
  const problems: string[] = [];
  const records = data.records;
  if (row.status === 'active') {
    if (!row.headCid) problems.push('active without a head');
    else if (!data.headLoc) problems.push(`head commit ${cidToString(row.headCid, 0)} is not in the block index`);
    else if (data.headLoc.packKey === null) problems.push(`head commit is indexed in pack ${data.headLoc.packId}, which has no packs row`);
  }
  if (row.status === 'deleted' || row.status === 'dropped') {
    if (row.headCid) problems.push(`${row.status} but still has a head`);
    if (records && records.length > 0) problems.push(`${row.status} but still has ${records.length} record index rows`);
  }
  if (!row.headCid && records && records.length > 0) problems.push(`no head but ${records.length} record index rows`);
  if (records) {
    if (records.length !== row.recordsCount) problems.push(`records_count is ${row.recordsCount}, the record index holds ${records.length}`);
    if (data.collectionCounts) {
      const actual = new Map<string, number>();
      for (const r of records) actual.set(r.collection, (actual.get(r.collection) ?? 0) + 1);
      const all = new Set([...actual.keys(), ...data.collectionCounts.keys()]);
      for (const c of [...all].sort()) {
        const want = actual.get(c) ?? 0;
        const have = data.collectionCounts.get(c) ?? 0;
        if (want !== have) problems.push(`collection_counts says ${have} ${c}, the record index holds ${want}`);
      }
    }
  }
  return problems;
}

async function signingKeyOf(pool: pg.Pool, did: string): Promise<string | null> {
  const { rows } = await pool.query<{ signing_key: string | null }>('SELECT signing_key FROM repos WHERE did = $1', [did]);
  return rows[0]?.signing_key ?? null;
}

/**
 * The blocks among `cids` (by index) whose stored refcount differs from the references that
 * exist to them — `records` rows, repo heads, events — counted in one statement, so in one
 * snapshot: an import committing meanwhile cannot make them disagree. Blocks not indexed are
 * not reported here (whoever references them is).
 *
 * Without an index on `records.cid` and `events.cid` each call scans both tables once (hashed
 * `= ANY`), once per root; with one, it looks each block up.
 */
export async function refcountMismatches(pool: pg.Pool, cids: Uint8Array[]): Promise<{ index: number; refcount: number; refs: number }[]> {
  const out: { index: number; refcount: number; refs: number }[] = [];
  // Block CIDs are 36 bytes; anything else cannot be indexed and is someone else's finding.
  const keep = cids.flatMap((c, i) => (c.length === 36 ? [i] : []));
  for (let from = 0; from < keep.length; from += REFCOUNT_BATCH) {
    const batch = keep.slice(from, from + REFCOUNT_BATCH);
    // One bytea of concatenated CIDs, split in SQL: a bytea[] parameter costs a hex string
    // per element to build and to parse.
    const { rows } = await pool.query<{ i: string; refcount: string; refs: string }>(
      `WITH c AS MATERIALIZED (SELECT substring($1::bytea FROM (i - 1) * 36 + 1 FOR 36) AS cid, i FROM generate_series(1, $2::int) AS i),
            r AS (SELECT c.cid, count(*) AS n FROM c JOIN records x ON x.cid = c.cid GROUP BY c.cid),
            h AS (SELECT c.cid, count(*) AS n FROM c JOIN repos x ON x.head_cid = c.cid GROUP BY c.cid),
            e AS (SELECT c.cid, count(*) AS n FROM c JOIN events x ON x.cid = c.cid GROUP BY c.cid)
       SELECT c.i, b.refcount, coalesce(r.n, 0) + coalesce(h.n, 0) + coalesce(e.n, 0) AS refs
       FROM c JOIN blocks b ON b.cid = c.cid
       LEFT JOIN r ON r.cid = c.cid LEFT JOIN h ON h.cid = c.cid LEFT JOIN e ON e.cid = c.cid
       WHERE b.refcount <> coalesce(r.n, 0) + coalesce(h.n, 0) + coalesce(e.n, 0)`,
      [Buffer.concat(batch.map((i) => cids[i]!)), batch.length],
    );
    for (const r of rows) {
      const index = batch[Number(r.i) - 1]!;
      out.push({ index, refcount: Number(r.refcount), refs: Number(r.refs) });
    }
  }
  return out;
}

const REFCOUNT_BATCH = 50_000;
