/**
 * The XRPC read methods, answering as a PDS does for the repos the mirror holds. Each method is
 * a parameter schema and a function from checked parameters to a reply; the server does the
 * HTTP (status, headers, streaming, size limits, metrics).
 */
import type pg from 'pg';
import { z } from 'zod';
import * as CBOR from '@atcute/cbor';
import { cidToString, cidFromString } from '../atproto/cid.ts';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackBlockReader, type PackCache } from './blocks.ts';
import { XrpcError, invalidRequest, recordNotFound } from './errors.ts';
import { atIdentifier, bool, cid, did, limit, nsid, recordKey, tid } from './params.ts';
import { collectionsOf, didDocument, findBlob, listRepoPage, recordCid, recordPage, recordsSince, repoStatus, servableRepo, findRepo, type ServableRepo } from './repos.ts';
import { RepoCarPlans, repoCar, recordProof } from './repo-car.ts';
import { cidMapKey } from '../graph/blocks.ts';
import type { CarPlanStore } from './car-plan-store.ts';

export interface XrpcDeps {
  pool: pg.Pool;
  store: BlobStore;
  /** Packs up to this size are read whole by getRepo (see PackBlockReader). */
  wholePackMax: number;
  /** What recent getRepo CARs were made of, per head. */
  carPlans?: RepoCarPlans;
  /** What getRepo CARs are made of, per repo head, kept in PostgreSQL for every server. */
  carPlanStore?: CarPlanStore;
  /** Whole packs read and checked, shared by requests. */
  packCache?: PackCache;
}

export type Reply =
  | { kind: 'json'; body: unknown }
  | { kind: 'bytes'; contentType: string; body: Uint8Array; headers?: Record<string, string> }
  | { kind: 'stream'; contentType: string; body: AsyncIterable<Uint8Array> };

export interface XrpcMethod<S extends z.ZodType = z.ZodType> {
  params: S;
  handle(deps: XrpcDeps, params: z.infer<S>): Promise<Reply>;
}

function method<S extends z.ZodType>(params: S, handle: (deps: XrpcDeps, params: z.infer<S>) => Promise<Reply>): XrpcMethod {
  return { params, handle } as XrpcMethod;
}

const json = (body: unknown): Reply => ({ kind: 'json', body });
const cidString = (bytes: Uint8Array) => cidToString(bytes, 0);
const CAR = 'application/vnd.ipld.car';

/** Point reads touch a few blocks: read those by range, never a whole large pack. */
const pointReader = (deps: XrpcDeps) => new PackBlockReader(deps.pool, deps.store, { wholePackMax: 256 * 1024, ...(deps.packCache ? { cache: deps.packCache } : {}) });

/** Record bytes (DAG-CBOR) as the JSON a PDS returns (`$link`, `$bytes`). */
function recordValue(bytes: Uint8Array, uri: string): unknown {
  try {
    return CBOR.decode(bytes);
  } catch (err) {
    throw new XrpcError(500, 'InternalServerError', `record ${uri} is not valid DAG-CBOR: ${(err as Error).message}`);
  }
}

export const METHODS: Record<string, XrpcMethod> = {
  'com.atproto.sync.getRepo': method(z.object({ did, since: tid.optional() }), async (deps, p) => {
    const repo = await servableRepo(deps.pool, p.did);
    const records = p.since === undefined ? undefined : new Set((await recordsSince(deps.pool, repo.did, p.since)).map(cidMapKey));
    const reader = new PackBlockReader(deps.pool, deps.store, { wholePackMax: deps.wholePackMax, ...(deps.packCache ? { cache: deps.packCache } : {}) });
    return { kind: 'stream', contentType: CAR, body: repoCar(reader, { head: repo.head, dataRoot: repo.data, ...(records ? { records } : {}) }, deps.carPlans, deps.carPlanStore ? { plans: deps.carPlanStore, did: repo.did } : undefined) };
  }),

  'com.atproto.sync.getLatestCommit': method(z.object({ did }), async (deps, p) => {
    const repo = await servableRepo(deps.pool, p.did);
    return json({ cid: cidString(repo.head), rev: repo.rev });
  }),

  'com.atproto.sync.getRepoStatus': method(z.object({ did }), async (deps, p) => {
    const row = await findRepo(deps.pool, p.did);
    if (!row || row.head === null || row.status === 'deleted' || row.status === 'dropped') throw new XrpcError(400, 'RepoNotFound', `Could not find repo for DID: ${p.did}`);
    const status = repoStatus(row);
    return json({ did: row.did, ...status, ...(status.active ? { rev: row.rev } : {}) });
  }),

  'com.atproto.sync.listRepos': method(z.object({ limit: limit(1, 1000, 500), cursor: did.optional() }), async (deps, p) => {
    const rows = await listRepoPage(deps.pool, p.cursor, p.limit);
    const repos = rows.map((r) => ({ did: r.did, head: cidString(r.head!), rev: r.rev, ...repoStatus(r) }));
    return json({ ...(rows.length > 0 ? { cursor: rows.at(-1)!.did } : {}), repos });
  }),

  'com.atproto.sync.getBlob': method(z.object({ did, cid }), async (deps, p) => {
    await servableRepo(deps.pool, p.did);
    const blob = await findBlob(deps.pool, p.cid);
    const bytes = blob ? await deps.store.get(blob.key) : null;
    if (!blob || bytes === null) throw new XrpcError(400, 'BlobNotFound', 'Blob not found');
    return {
      kind: 'bytes',
      contentType: blob.mime ?? 'application/octet-stream',
      body: bytes,
      headers: { 'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'none'; sandbox" },
    };
  }),

  'com.atproto.sync.getRecord': method(z.object({ did, collection: nsid, rkey: recordKey }), async (deps, p) => {
    const repo = await servableRepo(deps.pool, p.did);
    const proof = await recordProof(pointReader(deps), repo.head, repo.data, `${p.collection}/${p.rkey}`);
    return { kind: 'bytes', contentType: CAR, body: proof.car };
  }),

  'com.atproto.repo.getRecord': method(z.object({ repo: atIdentifier, collection: nsid, rkey: recordKey, cid: cid.optional() }), async (deps, p) => {
    const repo = await servableRepo(deps.pool, p.repo);
    const uri = `at://${repo.did}/${p.collection}/${p.rkey}`;
    const stored = await recordCid(deps.pool, repo.did, p.collection, p.rkey);
    if (!stored) throw recordNotFound(uri);
    if (p.cid !== undefined) {
      const wanted = cidFromString(p.cid);
      if (!wanted || !Buffer.from(wanted).equals(stored)) throw recordNotFound(uri);
    }
    const [bytes] = await pointReader(deps).getMany([stored]);
    return json({ uri, cid: cidString(stored), value: recordValue(bytes!, uri) });
  }),

  'com.atproto.repo.listRecords': method(
    z.object({ repo: atIdentifier, collection: nsid, limit: limit(1, 100, 50), cursor: recordKey.optional(), reverse: bool.default(false) }),
    async (deps, p) => {
      const repo = await servableRepo(deps.pool, p.repo);
      const refs = await recordPage(deps.pool, repo.did, p.collection, { limit: p.limit, reverse: p.reverse, ...(p.cursor !== undefined ? { cursor: p.cursor } : {}) });
      const blocks = await pointReader(deps).getMany(refs.map((r) => r.cid));
      const records = refs.map((r, i) => {
        const uri = `at://${repo.did}/${p.collection}/${r.rkey}`;
        return { uri, cid: cidString(r.cid), value: recordValue(blocks[i]!, uri) };
      });
      return json({ ...(refs.length > 0 ? { cursor: refs.at(-1)!.rkey } : {}), records });
    },
  ),

  'com.atproto.repo.describeRepo': method(z.object({ repo: atIdentifier }), async (deps, p) => {
    const repo = await servableRepo(deps.pool, p.repo);
    const collections = await collectionsOf(deps.pool, repo.did);
    return json({ handle: repo.handle ?? 'handle.invalid', did: repo.did, didDoc: didDocument(repo), collections, handleIsCorrect: repo.handle !== null });
  }),
};

/** The method for an NSID path segment, or the XRPC error a PDS gives for an unknown one. */
export function methodFor(nsidText: string): XrpcMethod {
  const m = Object.hasOwn(METHODS, nsidText) ? METHODS[nsidText] : undefined;
  if (m) return m;
  if (!/^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9-]+){2,}$/.test(nsidText) || nsidText.length > 317) throw invalidRequest(`Error: not a valid method name: ${JSON.stringify(nsidText.slice(0, 100))}`);
  throw new XrpcError(501, 'MethodNotImplemented', `Method Not Implemented: ${nsidText}`);
}
