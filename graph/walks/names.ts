/**
 * The names of the walk types and validate checks, with nothing else: workflow code (which runs
 * in Temporal's sandbox and must not load Postgres or crypto code) validates input against them.
 */

export const WALK_TYPES = {
  scrub: { defaultNodes: ['deep'], doc: 'every blobstore component holds every reachable pack and blob; --repair rewrites bad copies' },
  validate: { defaultNodes: ['deep'], doc: 'hashes, signatures, MST invariants, index vs MST, refcounts, dangling references' },
  corpus: { defaultNodes: ['shallow'], doc: 'dump sampled blocks under --output-dir, by node type and repo path' },
  'compression-benefit': { defaultNodes: ['shallow'], doc: 'what zstd (with and without a per-type dictionary) would save, per node type' },
} as const;

export type WalkTypeName = keyof typeof WALK_TYPES;

export const WALK_TYPE_NAMES = Object.keys(WALK_TYPES) as WalkTypeName[];

export const VALIDATE_CHECKS = [
  'block-hash',
  'commit-signature',
  'mst',
  'index-mst',
  'record-block',
  'refcount',
  'event-block',
  'repo-state',
  'strong-ref',
] as const;

export type ValidateCheck = (typeof VALIDATE_CHECKS)[number];
