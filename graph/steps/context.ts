/**
 * What a step gets to work with, and what each step returns about its node (the payload the
 * walk types' visitors check, dump or measure).
 */
import type pg from 'pg';
import type { BlobStore } from '../../storage/blobstore/types.ts';
import type { Commit } from '../../atproto/commit.ts';
import type { RecordRefs } from '../../atproto/refs.ts';
import type { Batcher } from '../batch.ts';
import type { BlockSource } from '../blocks.ts';
import type { LocationTable } from '../locations.ts';
import type { RepoBatches } from '../repo-batch.ts';
import type { BlockLoc, Node, OutEdge } from '../nodes.ts';
import type { EdgeType, NodeType } from '../schema.ts';
import type { PackedEvents, PackedRecords } from '../packed.ts';

/** Loads a walk type needs beyond what the walked edges need. */
export interface StepNeeds {
  /** Repo: read the record index even when RecordRow nodes are not walked (index-vs-MST check). */
  recordIndex: boolean;
  /** Repo: read `collection_counts` (repo-state check). */
  collectionCounts: boolean;
  /** Record: read and parse the record even when no walked edge needs it (strong-ref check). */
  recordRefs: boolean;
  /** Commit, MstNode, Record, Block: read the bytes even when no walked edge needs them. */
  blockBytes: boolean;
  /**
   * Repo: compare, for every block of the packs whose index it reads, the stored refcount with
   * the references that exist (refcount check), in the same snapshot as the repo's rows.
   */
  refcounts: boolean;
}

export const NO_NEEDS: StepNeeds = { recordIndex: false, collectionCounts: false, recordRefs: false, blockBytes: false, refcounts: false };

/** Refcounts the Repo step compared in bulk: the packs covered, and the blocks (by `cidMapKey`) that disagree. */
export interface RefcountScan {
  /** Packs whose every block was compared. */
  packs: Set<number>;
  /** Blocks outside those packs that were compared too (the repo's records elsewhere), by `cidMapKey`. */
  blocks: Set<string>;
  mismatches: Map<string, { refcount: number; refs: number }>;
  /**
   * `cidWord` of every key of `blocks` and of `mismatches`: a block's visit asks both, and most
   * blocks are in neither, which these answer without the block's key made (a string each).
   */
  blockWords: Set<number>;
  mismatchWords: Set<number>;
}

/** Per-root caches: a root's nodes share them, and they go when the root is done. */
export interface RootScope {
  index: number;
  root: Node;
  /** Block locations the Repo step read in bulk (the block index of the repo's packs). */
  locations: LocationTable;
}

export interface PackRow {
  id: number;
  key: string;
  sizeBytes: number;
  blockCount: number;
  createdAt: Date;
}

export interface BlobRow {
  cid: string;
  status: 'present' | 'missing';
  key: string | null;
  size: number | null;
  createdAt: Date;
}

/** Row lookups that concurrent steps share (one query per batch). */
export interface RowLoaders {
  pack: Batcher<string, PackRow | null>;
  /** Pack rows already read with the repos that use them (by key), so a Pack step needs no query. */
  knownPacks: Map<string, PackRow>;
  blob: Batcher<string, BlobRow | null>;
}

export interface StepContext {
  pool: pg.Pool;
  store: BlobStore;
  blocks: BlockSource;
  rows: RowLoaders;
  /** The Repo step's reads, a batch of roots at a time. */
  repos: RepoBatches;
  needs: StepNeeds;
  scope: RootScope;
  /** Whether the walk follows this edge type (steps skip work for edges nobody follows). */
  wants(edge: EdgeType): boolean;
}

export interface RepoRow {
  did: string;
  status: string;
  goneStatus: string | null;
  rev: string | null;
  headCid: Uint8Array | null;
  dataCid: Uint8Array | null;
  signingKey: string | null;
  recordsCount: number;
}

/** A block as a step read it. `bytes` is null when nothing needed them. */
export interface BlockData {
  loc: BlockLoc;
  bytes: Uint8Array | null;
  /** False when the bytes do not hash to the CID (then nothing was decoded from them). */
  hashOk: boolean;
}

export interface StepData {
  Repo: {
    /** Null when the repos row does not exist. */
    row: RepoRow | null;
    /** The record index of the repo, packed, when loaded (the Repo step's record rows come from it a chunk at a time; checks with `needs.recordIndex` read it whole). */
    recordRows: PackedRecords | null;
    /** The repo's events, packed, when loaded. */
    events: PackedEvents | null;
    collectionCounts: Map<string, number> | null;
    /** Where the head commit is; null when there is no head or it is not indexed. */
    headLoc: BlockLoc | null;
    /** With `needs.refcounts`: the refcount comparison of the packs read in bulk. */
    refcounts: RefcountScan | null;
  };
  Commit: BlockData & { commit: Commit | null; decodeError: string | null };
  MstNode: BlockData & {
    /** The node's layer (from its first key); -1 when it has no keys or could not be read. */
    layer: number;
    /** The records this node holds, in order. */
    leaves: { path: string; cid: Uint8Array }[];
    /** Broken MST invariants found at this node. */
    problems: string[];
  };
  Record: BlockData & { refs: RecordRefs | null; refsError: string | null };
  Blob: { row: BlobRow | null };
  /** The row, and where its block is (null when the block index lacks it). */
  RecordRow: { row: { cid: Uint8Array; loc: BlockLoc | null } | null };
  Event: { row: { did: string; kind: string; collection: string | null; rkey: string | null; cid: Uint8Array | null; loc: BlockLoc | null } | null };
  Pack: { row: PackRow | null };
  Block: BlockData;
}

export interface StepResult<T extends NodeType> {
  data: StepData[T];
  edges: OutEdge[];
  /** Payload bytes loaded. */
  bytes: number;
  /**
   * More edges, pulled a chunk at a time as the walk is ready for them (a repo's record rows and
   * events): they come after `edges` and are stepped before them, as if all were in `edges`.
   */
  more?: EdgeChunks;
}

/**
 * Edges a step hands over in chunks, so that a node with a million children does not put a
 * million edges, nodes and routes in memory at once. `next` gives the chunk that `edges` would
 * have ended with, then the one before it, and so on (the walk's stack takes the last edge
 * first), and null when none are left.
 */
export interface EdgeChunks {
  /** Edges not yet handed over (the walk sizes its visited set once). */
  readonly remaining: number;
  next(): readonly OutEdge[] | null;
}

/** A stepped node with its payload, typed together: switch on `node.type`. */
export type Visit = { [T in NodeType]: { node: Extract<Node, { type: T }>; data: StepData[T] } }[NodeType];
