/**
 * The graph the walker walks, as one table: every node type, where it is stored, and its
 * outgoing edge types with their targets. Node types, edge types, the source and target of each
 * edge type, and the named groups all follow from `SCHEMA`; adding a node type is a row here
 * and a step function in `steps/`, and the compiler points at every switch that must learn it.
 *
 * `Block` is a block index row reached from the pack that holds it: a pack's blocks are untyped
 * bytes (the repo graph, not the pack, says which is a commit, a node or a record).
 */

export type Storage = 'sql' | 'block' | 'blobstore';

interface NodeSpec {
  /** Where the node's payload is loaded from when it is stepped. */
  stored: Storage;
  /** What a node's key is, for `--walk-root Type:key`. */
  key: string;
  /** Outgoing edge types and the node type each leads to. */
  edges: Readonly<Record<string, string>>;
}

export const SCHEMA = {
  Repo: {
    stored: 'sql',
    key: 'DID',
    edges: { RepoToCommit: 'Commit', RepoToRecordRow: 'RecordRow', RepoToEvent: 'Event' },
  },
  Commit: { stored: 'block', key: 'CID', edges: { CommitToMstNode: 'MstNode', CommitToPack: 'Pack' } },
  MstNode: {
    stored: 'block',
    key: 'CID',
    edges: { MstNodeToMstNode: 'MstNode', MstNodeToRecord: 'Record', MstNodeToPack: 'Pack' },
  },
  Record: {
    stored: 'block',
    key: 'CID',
    edges: { RecordToBlob: 'Blob', RecordToRecord: 'Record', RecordToPack: 'Pack' },
  },
  Blob: { stored: 'blobstore', key: 'CID', edges: {} },
  RecordRow: { stored: 'sql', key: 'DID/collection/rkey', edges: { RecordRowToRecord: 'Record' } },
  Event: { stored: 'sql', key: 'event id', edges: { EventToRecord: 'Record' } },
  Pack: { stored: 'blobstore', key: 'pack key (packs/aa/….car)', edges: { PackToBlock: 'Block' } },
  Block: { stored: 'block', key: 'CID', edges: {} },
} as const satisfies Record<string, NodeSpec>;

export type NodeType = keyof typeof SCHEMA;

/** Edge types leaving node type `N`. */
export type EdgeTypeOf<N extends NodeType> = keyof (typeof SCHEMA)[N]['edges'] & string;
export type EdgeType = { [N in NodeType]: EdgeTypeOf<N> }[NodeType];

/** The node type an edge type leads to. */
export type EdgeTarget<E extends EdgeType> = {
  [N in NodeType]: E extends EdgeTypeOf<N> ? ((typeof SCHEMA)[N]['edges'] & Record<E, NodeType>)[E] : never;
}[NodeType];

export interface EdgeSpec {
  type: EdgeType;
  source: NodeType;
  target: NodeType;
}

export const NODE_TYPES = Object.keys(SCHEMA) as NodeType[];

/** Every edge type with its source and target, derived from `SCHEMA`. */
export const EDGE_TYPES: readonly EdgeSpec[] = NODE_TYPES.flatMap((source) =>
  Object.entries(SCHEMA[source].edges as Record<string, NodeType>).map(([type, target]) => ({ type: type as EdgeType, source, target })),
);

const EDGE_BY_TYPE = new Map(EDGE_TYPES.map((e) => [e.type, e]));

export function isNodeType(s: string): s is NodeType {
  return Object.hasOwn(SCHEMA, s);
}

export function isEdgeType(s: string): s is EdgeType {
  return EDGE_BY_TYPE.has(s as EdgeType);
}

export function edgeSpec(type: EdgeType): EdgeSpec {
  return EDGE_BY_TYPE.get(type)!;
}

/** Position of a node type in `NODE_TYPES`: a small integer for typed arrays and hash seeds. */
export const NODE_TYPE_INDEX: Readonly<Record<NodeType, number>> = Object.fromEntries(NODE_TYPES.map((t, i) => [t, i])) as Record<NodeType, number>;

/**
 * Named groups of node types, usable wherever a node type is (`--include-node deep`):
 * - `shallow`: a repo's current state as a reader sees it: repo, commit, MST, records.
 * - `deep`: everything stored for a repo: shallow plus the record index, the event log, blobs
 *   and the packs that hold its blocks. (Block index rows reached from packs are left out: they
 *   are the same blocks again, seen from the pack's side.)
 * - `sql`, `blocks`, `blobstore`: by where the payload is stored.
 * - `all`: every node type.
 */
export const NODE_GROUPS = {
  shallow: ['Repo', 'Commit', 'MstNode', 'Record'],
  deep: ['Repo', 'Commit', 'MstNode', 'Record', 'RecordRow', 'Event', 'Blob', 'Pack'],
  sql: NODE_TYPES.filter((t) => SCHEMA[t].stored === 'sql'),
  blocks: NODE_TYPES.filter((t) => SCHEMA[t].stored === 'block'),
  blobstore: NODE_TYPES.filter((t) => SCHEMA[t].stored === 'blobstore'),
  all: NODE_TYPES,
} as const satisfies Record<string, readonly NodeType[]>;

export type NodeGroup = keyof typeof NODE_GROUPS;

/**
 * Edge types left out unless asked for by name: following a strong ref leaves the repo being
 * walked for someone else's, and from there the next quote, without bound but the visited set.
 */
export const EDGES_OFF_BY_DEFAULT: readonly EdgeType[] = ['RecordToRecord'];

export class GraphFilterError extends Error {
  override name = 'GraphFilterError';
}

/** Node types named by `names` (types or group names). @throws {GraphFilterError} on an unknown name. */
export function expandNodeTypes(names: readonly string[]): Set<NodeType> {
  const out = new Set<NodeType>();
  for (const name of names) {
    if (isNodeType(name)) out.add(name);
    else if (Object.hasOwn(NODE_GROUPS, name)) for (const t of NODE_GROUPS[name as NodeGroup]) out.add(t);
    else throw new GraphFilterError(`unknown node type or group ${JSON.stringify(name)}; known: ${[...NODE_TYPES, ...Object.keys(NODE_GROUPS)].join(', ')}`);
  }
  return out;
}

/** @throws {GraphFilterError} on an unknown edge type. */
export function expandEdgeTypes(names: readonly string[]): Set<EdgeType> {
  const out = new Set<EdgeType>();
  for (const name of names) {
    if (!isEdgeType(name)) throw new GraphFilterError(`unknown edge type ${JSON.stringify(name)}; known: ${EDGE_TYPES.map((e) => e.type).join(', ')}`);
    out.add(name);
  }
  return out;
}

export interface GraphFilter {
  /** Node types or group names to walk; default: the walk type's default group. */
  includeNodes?: readonly string[];
  excludeNodes?: readonly string[];
  /** Edge types to walk; default every edge between included node types except `EDGES_OFF_BY_DEFAULT`. */
  includeEdges?: readonly string[];
  excludeEdges?: readonly string[];
}

export interface WalkGraph {
  nodes: ReadonlySet<NodeType>;
  edges: ReadonlySet<EdgeType>;
  /** Node types the filters allowed but no root reaches, so they were dropped. */
  pruned: NodeType[];
}

/**
 * The node and edge types a walk follows: the included minus the excluded, edges only between
 * kept types, then pruned to what the root types can reach.
 *
 * @throws {GraphFilterError} on an unknown name, or when a root type is not walked.
 */
export function resolveWalkGraph(filter: GraphFilter, rootTypes: ReadonlySet<NodeType>, defaultNodes: readonly string[]): WalkGraph {
  const nodes = expandNodeTypes(filter.includeNodes?.length ? filter.includeNodes : defaultNodes);
  for (const t of expandNodeTypes(filter.excludeNodes ?? [])) nodes.delete(t);
  for (const t of rootTypes) {
    if (!nodes.has(t)) throw new GraphFilterError(`roots are of type ${t}, which the node filters leave out`);
  }
  const edges = filter.includeEdges?.length
    ? expandEdgeTypes(filter.includeEdges)
    : new Set(EDGE_TYPES.map((e) => e.type).filter((e) => !EDGES_OFF_BY_DEFAULT.includes(e)));
  for (const e of expandEdgeTypes(filter.excludeEdges ?? [])) edges.delete(e);
  for (const e of [...edges]) {
    const spec = edgeSpec(e);
    if (!nodes.has(spec.source) || !nodes.has(spec.target)) edges.delete(e);
  }
  return prune(nodes, edges, rootTypes);
}

/** Keeps the node types reachable from `rootTypes` over `edges`, and the edges between them. */
export function prune(nodes: ReadonlySet<NodeType>, edges: ReadonlySet<EdgeType>, rootTypes: ReadonlySet<NodeType>): WalkGraph {
  const reached = new Set<NodeType>(rootTypes);
  for (let grew = true; grew; ) {
    grew = false;
    for (const e of edges) {
      const spec = edgeSpec(e);
      if (reached.has(spec.source) && !reached.has(spec.target) && nodes.has(spec.target)) {
        reached.add(spec.target);
        grew = true;
      }
    }
  }
  const keptEdges = new Set([...edges].filter((e) => reached.has(edgeSpec(e).source) && reached.has(edgeSpec(e).target)));
  return { nodes: reached, edges: keptEdges, pruned: [...nodes].filter((t) => !reached.has(t)) };
}
