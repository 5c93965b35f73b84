/**
 * Nodes and edges as values. A node is its key (type + CID or row key); what a step already
 * knows about it from the step that found it (a block's location, the row it was read from, the
 * repo state it belongs to) rides along as a hint, so the walk does not ask Postgres again —
 * hints never change a node's identity.
 */
import { cidFromString, cidToString } from '../atproto/cid.ts';
import type { MstPosition } from '../atproto/mst-check.ts';
import { type EdgeTarget, type EdgeType, type NodeType, isNodeType } from './schema.ts';

/** Where the block index says a block is. `packKey` is null when its `pack_id` names no pack row. */
export interface BlockLoc {
  packId: number;
  packKey: string | null;
  /** Size of the whole pack (from its packs row; 0 when there is none). */
  packSize: number;
  offset: number;
  length: number;
  refcount: number;
  /**
   * References to the block counted in the statement that read `refcount`: its record index rows
   * and events, plus, for a repo's head commit read with its repos row, that repo's head. Other
   * repos' heads are not counted (`repos.head_cid` has no index: counting them scans `repos`), so
   * where this differs from `refcount` the refcount check counts again mirror-wide before it
   * reports. Set on locations looked up one by one and on heads when the walk checks refcounts
   * (`BlockSourceOptions.countRefs`, `RepoWants.refcounts`), absent otherwise.
   */
  refs?: number;
}

/** The repo state a commit was reached from, read once per walk (the repo's head). */
export interface RepoContext {
  did: string;
  rev: string | null;
  dataCid: Uint8Array | null;
  signingKey: string | null;
}

export type { MstPosition };

/** A record index row as the Repo step read it. */
export interface RecordRowData {
  cid: Uint8Array;
}

/** An event as the Repo step read it. */
export interface EventRowData {
  did: string;
  kind: string;
  collection: string | null;
  rkey: string | null;
  cid: Uint8Array | null;
}

export type Node =
  | { type: 'Repo'; did: string }
  | { type: 'Commit'; cid: Uint8Array; loc?: BlockLoc; repo?: RepoContext }
  | { type: 'MstNode'; cid: Uint8Array; loc?: BlockLoc; pos?: MstPosition }
  | { type: 'Record'; cid: Uint8Array; loc?: BlockLoc }
  | { type: 'Blob'; cid: string }
  | { type: 'RecordRow'; did: string; collection: string; rkey: string; row?: RecordRowData }
  | { type: 'Event'; id: string; row?: EventRowData }
  | { type: 'Pack'; key: string }
  | { type: 'Block'; cid: Uint8Array; loc?: BlockLoc };

export type NodeOf<T extends NodeType> = Extract<Node, { type: T }>;

// Every node type of the schema has a node shape and no shape lacks a type: a new row in
// SCHEMA without a case here fails to compile.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _everyTypeHasAShape: Same<Node['type'], NodeType> = true;
void _everyTypeHasAShape;

/**
 * The end of a switch over node types (`default: return unhandledNode(node)`): a node type the
 * cases above do not handle leaves `node` not `never`, and the call fails to compile.
 */
export function unhandledNode(node: never): never {
  throw new Error(`no case for node ${JSON.stringify(node, (_k, v: unknown) => (v instanceof Uint8Array ? '<bytes>' : v))}`);
}

/** An edge a step found: its type, the node it leads to, and the repo path where one applies. */
export type OutEdge = { [E in EdgeType]: { type: E; node: NodeOf<EdgeTarget<E>>; path?: string } }[EdgeType];

/** The key of a node as text: what `--walk-root Type:key` takes and findings record. */
export function nodeKey(node: Node): string {
  switch (node.type) {
    case 'Repo':
      return node.did;
    case 'Commit':
    case 'MstNode':
    case 'Record':
    case 'Block':
      return cidToString(node.cid, 0);
    case 'Blob':
      return node.cid;
    case 'RecordRow':
      return `${node.did}/${node.collection}/${node.rkey}`;
    case 'Event':
      return node.id;
    case 'Pack':
      return node.key;
  }
}

export class InvalidRootError extends Error {
  override name = 'InvalidRootError';
}

/**
 * A root from `Type:key` (e.g. `Repo:did:plc:…`, `Pack:packs/ab/….car`, `Record:bafy…`).
 * @throws {InvalidRootError} naming what is wrong.
 */
export function parseRoot(spec: string): Node {
  const colon = spec.indexOf(':');
  const type = colon < 0 ? '' : spec.slice(0, colon);
  const key = spec.slice(colon + 1);
  if (!isNodeType(type)) throw new InvalidRootError(`root ${JSON.stringify(spec)} is not Type:key with a known node type`);
  if (key === '') throw new InvalidRootError(`root ${JSON.stringify(spec)} has an empty key`);
  const cid = () => {
    const bytes = cidFromString(key);
    if (!bytes) throw new InvalidRootError(`root ${JSON.stringify(spec)}: ${JSON.stringify(key)} is not a CIDv1 (dag-cbor or raw, sha-256)`);
    return bytes;
  };
  switch (type) {
    case 'Repo':
      if (!key.startsWith('did:')) throw new InvalidRootError(`root ${JSON.stringify(spec)}: a repo's key is its DID`);
      return { type, did: key };
    case 'Commit':
    case 'MstNode':
    case 'Record':
    case 'Block':
      return { type, cid: cid() };
    case 'Blob':
      cid();
      return { type, cid: key };
    case 'RecordRow': {
      // did:plc:x/collection/rkey — a DID holds no `/`, a collection (NSID) none either.
      const m = /^(did:[^/]+)\/([^/]+)\/([^/]+)$/.exec(key);
      if (!m) throw new InvalidRootError(`root ${JSON.stringify(spec)}: a record row's key is DID/collection/rkey`);
      return { type, did: m[1]!, collection: m[2]!, rkey: m[3]! };
    }
    case 'Event':
      if (!/^\d+$/.test(key)) throw new InvalidRootError(`root ${JSON.stringify(spec)}: an event's key is its numeric id`);
      return { type, id: key };
    case 'Pack':
      if (!/^packs\/[0-9a-f]{2}\/[0-9a-f]{64}\.car$/.test(key)) throw new InvalidRootError(`root ${JSON.stringify(spec)}: a pack's key is packs/<aa>/<sha256>.car`);
      return { type, key };
  }
}
