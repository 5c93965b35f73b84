/**
 * The scrub walk: every component of the blobstore holds every reachable pack and blob, intact.
 *
 * For each sampled Pack and Blob (a blob only when its row says it is present) older than the
 * grace period — a key written moments ago may still be on its way to some components — every
 * component is asked for the key's size. A component without it is `scrub-missing`; a copy of
 * the wrong size, or with `verifyBytes` one whose bytes do not hash to the key, is
 * `scrub-corrupt`; a component that cannot be asked is `scrub-unreachable` (a warning: down is
 * not missing). With `repair`, each missing or corrupt copy is rewritten from a copy that
 * verified, and its heal queue entry closed; with no verified copy anywhere the key is
 * `scrub-unrepairable`. Report-only is the default.
 *
 * On a store that is not multiplexed there is one component and nothing to repair from.
 */
import type { BlobStore } from '../../storage/blobstore/types.ts';
import { MultiplexBlobStore } from '../../storage/blobstore/multiplex.ts';
import { verifyContent } from '../../storage/keys.ts';
import type { Visitor, VisitContext } from '../engine.ts';
import { limiter } from '../limit.ts';
import type { StepData } from '../steps/context.ts';
import { unhandledNode } from '../nodes.ts';

export interface ScrubOptions {
  /** Rewrite missing and corrupt copies from a verified one. Default false (report only). */
  repair?: boolean;
  /** Hash every copy, not only compare sizes. Default false. */
  verifyBytes?: boolean;
  /** Keys younger than this are skipped. Default 3600. */
  graceSeconds?: number;
  /** Closes heal queue entries of repaired copies. */
  healQueue?: { markHealedKey(key: string, component: string): Promise<boolean> };
  /** Keys checked at once. Default 16. */
  concurrency?: number;
  now?: () => number;
}

/** Keys whose copies a walk remembers (about 200 bytes each). */
const SEEN_KEYS = 100_000;

interface Copy {
  component: string;
  state: 'ok' | 'missing' | 'corrupt' | 'unreachable';
  detail?: string;
  /** Bytes hashed (with verifyBytes). */
  verifiedBytes?: number;
}

export function scrubVisitor(store: BlobStore, opts: ScrubOptions = {}): Visitor {
  const graceMs = (opts.graceSeconds ?? 3600) * 1000;
  const now = opts.now ?? Date.now;
  const limit = limiter(opts.concurrency ?? 16);
  const components: readonly BlobStore[] = store instanceof MultiplexBlobStore ? store.components : [store];
  // What each key's copies looked like, for the other repos that reach the same pack or blob in
  // this walk (each repo reports it, as its visited set is its own; the store is asked once).
  // Not with repair: a repaired key must be looked at again.
  const seen = new Map<string, Promise<Copy[]>>();
  const inspectAll = (key: string, size: number | null): Promise<Copy[]> => {
    const verify = opts.verifyBytes ?? false;
    if (opts.repair) return Promise.all(components.map((c) => inspect(c, key, size, verify)));
    let copies = seen.get(`${key} ${size}`);
    if (!copies) {
      if (seen.size >= SEEN_KEYS) seen.delete(seen.keys().next().value!);
      copies = Promise.all(components.map((c) => inspect(c, key, size, verify)));
      seen.set(`${key} ${size}`, copies);
    }
    return copies;
  };

  const check = async (key: string, size: number | null, ctx: VisitContext) => {
    ctx.count('scrub.keys');
    const copies = await inspectAll(key, size);
    const verified = copies.reduce((n, c) => n + (c.verifiedBytes ?? 0), 0);
    if (verified > 0) ctx.count('scrub.bytesVerified', verified);
    ctx.count('scrub.copies', copies.length);
    const of = (state: Copy['state']) => copies.filter((c) => c.state === state);
    const bad = [...of('missing'), ...of('corrupt')];
    let repaired: string[] = [];
    let repairNote = '';
    if (bad.length > 0 && opts.repair) {
      const source = await verifiedCopy(components, key, of('ok').map((c) => c.component));
      if (source) {
        repaired = await repair(components, key, source.bytes, bad.map((c) => c.component), opts.healQueue);
        ctx.count('scrub.repaired', repaired.length);
        repairNote = `; repaired from ${source.component}`;
      } else {
        ctx.report({ check: 'scrub-unrepairable', detail: `no component holds a copy that verifies`, components: bad.map((c) => c.component) });
      }
    }
    const missing = of('missing');
    if (missing.length) {
      ctx.count('scrub.missing', missing.length);
      ctx.report({
        check: 'scrub-missing',
        detail: `missing on ${missing.map((c) => c.component).join(', ')} (${copies.length - missing.length} of ${copies.length} components hold it)${repaired.length ? repairNote : ''}`,
        components: missing.map((c) => c.component),
      });
    }
    const corrupt = of('corrupt');
    if (corrupt.length) {
      ctx.count('scrub.corrupt', corrupt.length);
      ctx.report({
        check: 'scrub-corrupt',
        detail: `${corrupt.map((c) => `${c.component}: ${c.detail}`).join('; ')}${repaired.length ? repairNote : ''}`,
        components: corrupt.map((c) => c.component),
      });
    }
    const down = of('unreachable');
    if (down.length) {
      ctx.report({ check: 'scrub-unreachable', severity: 'warn', detail: down.map((c) => `${c.component}: ${c.detail}`).join('; '), components: down.map((c) => c.component) });
    }
  };

  const schedule = (key: string, size: number | null, createdAt: Date, ctx: VisitContext) => {
    if (now() - createdAt.getTime() < graceMs) {
      ctx.count('scrub.young');
      return;
    }
    ctx.defer(() => limit(() => check(key, size, ctx)));
  };

  return {
    visit(v, ctx) {
      if (!ctx.sampled) return;
      switch (v.node.type) {
        case 'Pack': {
          const row = (v.data as StepData['Pack']).row;
          if (!row) ctx.report({ check: 'scrub-unindexed', severity: 'warn', detail: 'no packs row for this key; not checked' });
          else schedule(row.key, row.sizeBytes, row.createdAt, ctx);
          return;
        }
        case 'Blob': {
          const row = (v.data as StepData['Blob']).row;
          if (row?.status === 'present' && row.key) schedule(row.key, row.size, row.createdAt, ctx);
          return;
        }
        // What scrub walks through to reach packs and blobs; their copies are the packs'.
        case 'Repo':
        case 'Commit':
        case 'MstNode':
        case 'Record':
        case 'RecordRow':
        case 'Event':
        case 'Block':
          return;
        default:
          return unhandledNode(v.node);
      }
    },
  };
}

async function inspect(c: BlobStore, key: string, size: number | null, verifyBytes: boolean): Promise<Copy> {
  const component = c.name;
  try {
    if (verifyBytes) {
      const bytes = await c.get(key);
      if (bytes === null) return { component, state: 'missing' };
      const verifiedBytes = bytes.length;
      const v = verifyContent(key, bytes);
      if (!v.ok) return { component, state: 'corrupt', detail: v.reason, verifiedBytes };
      if (size !== null && bytes.length !== size) return { component, state: 'corrupt', detail: `${bytes.length} bytes, expected ${size}`, verifiedBytes };
      return { component, state: 'ok', verifiedBytes };
    }
    const st = await c.stat(key);
    if (st === null) return { component, state: 'missing' };
    if (size !== null && st.size !== size) return { component, state: 'corrupt', detail: `${st.size} bytes, expected ${size}` };
    return { component, state: 'ok' };
  } catch (err) {
    return { component, state: 'unreachable', detail: err instanceof Error ? err.message : String(err) };
  }
}

/** The first copy that verifies against its key, trying the components that looked fine first. */
async function verifiedCopy(components: readonly BlobStore[], key: string, likely: string[]): Promise<{ component: string; bytes: Uint8Array } | null> {
  const order = [...components].sort((a, b) => Number(!likely.includes(a.name)) - Number(!likely.includes(b.name)));
  for (const c of order) {
    const bytes = await c.get(key).catch(() => null);
    if (bytes !== null && verifyContent(key, bytes).ok) return { component: c.name, bytes };
  }
  return null;
}

/** Writes `bytes` to each target component; returns those that took it. */
async function repair(
  components: readonly BlobStore[],
  key: string,
  bytes: Uint8Array,
  targets: string[],
  heal: ScrubOptions['healQueue'],
): Promise<string[]> {
  const done: string[] = [];
  for (const name of targets) {
    const c = components.find((x) => x.name === name)!;
    // A put replaces the object whole (local: rename over it; S3: a new version), so a corrupt
    // copy never needs deleting first, which would leave a moment with no copy at all.
    await c.put(key, bytes);
    const st = await c.stat(key);
    if (st?.size === bytes.length) {
      done.push(name);
      await heal?.markHealedKey(key, name);
    }
  }
  return done;
}
