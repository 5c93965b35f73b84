/**
 * What starts a walk, as plain JSON: the `walk` workflow's input, what `repowalk walk start`
 * builds from its flags, and what `temporal workflow start --input` takes. Validated with zod;
 * every field has a default but the walk type. Pure (no Node built-ins): workflow code runs it.
 *
 *   { "type": "scrub", "slices": 4, "repair": true }
 *   { "type": "validate", "roots": ["did:plc:…"], "checks": ["mst", "refcount"], "sampleRate": 8, "sampleOffset": 3 }
 *   { "type": "corpus", "outputDir": "/tmp/corpus", "includeNodes": ["Record"], "pathRegex": "^app\\.bsky\\.feed\\.post/" }
 */
import { z } from 'zod';
import type { WalkSpec } from './run.ts';
import { EDGE_TYPES, GraphFilterError, NODE_GROUPS, NODE_TYPES, type NodeType, isNodeType, resolveWalkGraph } from './schema.ts';
import { VALIDATE_CHECKS, WALK_TYPES, WALK_TYPE_NAMES } from './walks/names.ts';

const nodeName = z.string().refine((s) => isNodeType(s) || Object.hasOwn(NODE_GROUPS, s), {
  message: `expected a node type or group: ${[...NODE_TYPES, ...Object.keys(NODE_GROUPS)].join(', ')}`,
});
const edgeName = z.string().refine((s) => EDGE_TYPES.some((e) => e.type === s), {
  message: `expected an edge type: ${EDGE_TYPES.map((e) => e.type).join(', ')}`,
});
/** A DID (a Repo root) or `Type:key`; the activity parses keys fully (`parseRoot`). */
const root = z.string().regex(/^(did:[a-z]+:[A-Za-z0-9._:%-]+|[A-Za-z]+:.+)$/, 'expected a DID or Type:key');

export const WalkInput = z
  .object({
    type: z.enum(WALK_TYPE_NAMES as [string, ...string[]]),
    /** Roots: DIDs or `Type:key`. Default: every repo in the mirror. */
    roots: z.array(root).min(1).optional(),
    includeNodes: z.array(nodeName).default([]),
    excludeNodes: z.array(nodeName).default([]),
    includeEdges: z.array(edgeName).default([]),
    excludeEdges: z.array(edgeName).default([]),
    sampleRate: z.number().int().min(1).default(1),
    sampleOffset: z.number().int().min(0).default(0),
    /** Only nodes reached over a repo path this matches are sampled (JavaScript regex, `u` flag). */
    pathRegex: z.string().min(1).optional(),
    /** Repos split into this many slices by DID hash, each its own child workflow. */
    slices: z.number().int().min(1).max(4096).default(1),
    /** Slices running at once. */
    sliceParallelism: z.number().int().min(1).max(256).default(4),
    /** Repos per page (one activity each). */
    pageSize: z.number().int().min(1).max(10_000).default(100),
    /** Steps at once inside a page. */
    scheduledMax: z.number().int().min(1).max(10_000).default(256),
    /** Repos open at once inside a page (past 4, only while the open ones are small). */
    rootConcurrency: z.number().int().min(1).max(256).default(256),
    /** Record a failed step as a finding and go on, instead of failing the page. */
    errorAsData: z.boolean().default(false),
    /** scrub: rewrite missing and corrupt copies from a verified one. */
    repair: z.boolean().default(false),
    /** scrub: hash every copy, not only compare sizes. */
    verifyBytes: z.boolean().default(false),
    /** scrub: keys younger than this are skipped. */
    graceSeconds: z.number().int().min(0).default(3600),
    /** validate: the checks to run; default all. */
    checks: z.array(z.enum(VALIDATE_CHECKS)).default([]),
    /** corpus: where to write (on the worker's file system). */
    outputDir: z.string().min(1).optional(),
    /** compression-benefit: zstd level, dictionary size (0 = none), blocks per type to train on. */
    zstdLevel: z.number().int().min(1).max(22).default(3),
    dictionarySize: z.number().int().min(0).max(1 << 20).default(16 * 1024),
    trainSamples: z.number().int().min(1).max(100_000).default(1000),
    /** Walk again this long after each pass ends, only repos whose row changed since the pass began. */
    tailIntervalSeconds: z.number().int().min(1).optional(),
    /** Heartbeat timeout of page activities: how soon a page on a dead worker is retried elsewhere. */
    heartbeatSeconds: z.number().int().min(1).max(600).default(60),
  })
  .superRefine((v, ctx) => {
    if (v.sampleOffset >= v.sampleRate) ctx.addIssue({ code: 'custom', path: ['sampleOffset'], message: `must be below sampleRate (${v.sampleRate})` });
    if (v.pathRegex !== undefined) {
      try {
        new RegExp(v.pathRegex, 'u');
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['pathRegex'], message: `not a regular expression: ${(err as Error).message}` });
      }
    }
    if (v.type === 'corpus' && !v.outputDir) ctx.addIssue({ code: 'custom', path: ['outputDir'], message: 'the corpus walk needs an output directory' });
    if (v.type !== 'scrub' && (v.repair || v.verifyBytes)) ctx.addIssue({ code: 'custom', path: [v.repair ? 'repair' : 'verifyBytes'], message: 'only the scrub walk repairs or verifies bytes' });
    if (v.type !== 'validate' && v.checks.length > 0) ctx.addIssue({ code: 'custom', path: ['checks'], message: 'only the validate walk has checks' });
    try {
      resolveWalkGraph(filterOf(v), rootTypes(v.roots), WALK_TYPES[v.type as keyof typeof WALK_TYPES].defaultNodes);
    } catch (err) {
      if (!(err instanceof GraphFilterError)) throw err;
      ctx.addIssue({ code: 'custom', path: ['includeNodes'], message: err.message });
    }
  })
  .transform((v) => ({ ...v, sliceParallelism: Math.min(v.sliceParallelism, v.slices) }));

export type WalkInput = z.output<typeof WalkInput>;
export type WalkInputJson = z.input<typeof WalkInput>;

function filterOf(v: Pick<WalkInput, 'includeNodes' | 'excludeNodes' | 'includeEdges' | 'excludeEdges'>) {
  return { includeNodes: v.includeNodes, excludeNodes: v.excludeNodes, includeEdges: v.includeEdges, excludeEdges: v.excludeEdges };
}

/** The node types of `roots` (DIDs are Repo roots); Repo when there are none. */
export function rootTypes(roots: readonly string[] | undefined): Set<NodeType> {
  const types = new Set<NodeType>();
  for (const r of roots ?? []) {
    const type = r.startsWith('did:') ? 'Repo' : r.slice(0, r.indexOf(':'));
    if (isNodeType(type)) types.add(type);
  }
  if (types.size === 0) types.add('Repo');
  return types;
}

/** The domain walk spec of a validated input. */
export function toWalkSpec(v: WalkInput): WalkSpec {
  return {
    type: v.type as WalkSpec['type'],
    filter: filterOf(v),
    sampling: { rate: v.sampleRate, offset: v.sampleOffset, ...(v.pathRegex !== undefined ? { pathRegex: v.pathRegex } : {}) },
    scheduledMax: v.scheduledMax,
    rootConcurrency: v.rootConcurrency,
    errorAsData: v.errorAsData,
    scrub: { repair: v.repair, verifyBytes: v.verifyBytes, graceSeconds: v.graceSeconds },
    validate: { checks: v.checks },
    ...(v.outputDir !== undefined ? { corpus: { outputDir: v.outputDir } } : {}),
    compression: { level: v.zstdLevel, dictionarySize: v.dictionarySize, trainSamples: v.trainSamples },
  };
}
