/**
 * Which records a backfill keeps. Full mode keeps every record. Filter mode keeps records whose
 * collection matches an include pattern (all, when there is none) and no exclude pattern, and
 * drops a whole repo that has no record in any signal collection. The signal test looks at every
 * record of the repo, not only the kept ones, so a signal collection need not be included.
 */
import { z } from 'zod';

/** An NSID (`app.bsky.feed.post`), a prefix pattern (`app.bsky.*`), or `*`. */
export const CollectionPattern = z
  .string()
  .regex(/^(\*|[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9-]+)*(\.\*)?)$/, 'expected an NSID, a prefix pattern like app.bsky.*, or *');

export const FilterOptions = z.object({
  mode: z.enum(['full', 'filter']).default('full'),
  include: z.array(CollectionPattern).default([]),
  exclude: z.array(CollectionPattern).default([]),
  signal: z.array(CollectionPattern).default([]),
});
export type FilterOptions = z.output<typeof FilterOptions>;

function matcher(patterns: string[]): (collection: string) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  let all = false;
  for (const p of patterns) {
    if (p === '*') all = true;
    else if (p.endsWith('.*')) prefixes.push(p.slice(0, -1));
    else exact.add(p);
  }
  return (c) => all || exact.has(c) || prefixes.some((p) => c.startsWith(p));
}

export interface CollectionFilter {
  /** Whether records of this collection are stored. */
  keeps(collection: string): boolean;
  /** Whether a repo with records in these collections is mirrored at all. */
  keepsRepo(collections: Iterable<string>): boolean;
}

export function collectionFilter(opts: FilterOptions): CollectionFilter {
  if (opts.mode === 'full') return { keeps: () => true, keepsRepo: () => true };
  const inc = opts.include.length > 0 ? matcher(opts.include) : () => true;
  const exc = matcher(opts.exclude);
  const sig = matcher(opts.signal);
  const memo = new Map<string, boolean>();
  return {
    keeps(c) {
      let v = memo.get(c);
      if (v === undefined) memo.set(c, (v = inc(c) && !exc(c)));
      return v;
    },
    keepsRepo(collections) {
      if (opts.signal.length === 0) return true;
      for (const c of collections) if (sig(c)) return true;
      return false;
    },
  };
}
