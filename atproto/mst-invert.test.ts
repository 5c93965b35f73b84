/**
 * The inversion gives what the reference MST implementation (`@atcute/mst`'s NodeWrangler)
 * gives, on random trees and random commits of several ops, with only the blocks the reference
 * reads (a frame's proof), and refuses an op that disagrees with the tree or a missing block.
 */
import { describe, expect, it } from 'vitest';
import * as CID from '@atcute/cid';
import { MemoryBlockStore, MSTNode, NodeStore, NodeWrangler } from '@atcute/mst';
import { CID_LENGTH, cidFromString, cidToString } from './cid.ts';
import { invertOps, MstProofError, type NodeSource, type ProofOp } from './mst-invert.ts';

/** A seeded generator, so a failure names a case that can be run again. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function valueCid(n: number): Promise<string> {
  return CID.toString(await CID.create(0x71, new TextEncoder().encode(`record ${n}`)));
}

class Source implements NodeSource {
  readonly #cids: Uint8Array[] = [];
  readonly #data: Uint8Array[] = [];
  constructor(blocks: Map<string, Uint8Array>) {
    for (const [cid, data] of blocks) {
      this.#cids.push(cidFromString(cid)!);
      this.#data.push(data);
    }
  }
  indexOf(cid: Uint8Array, offset = 0): number {
    return this.#cids.findIndex((c) => c.every((b, i) => b === cid[offset + i]));
  }
  dataAt(index: number): Uint8Array {
    return this.#data[index]!;
  }
}

/** A store that records the CIDs read from it. */
class Recording extends MemoryBlockStore {
  read = new Set<string>();
  override get(cid: string) {
    this.read.add(cid);
    return super.get(cid);
  }
}

const paths = (rand: () => number) => {
  const collections = ['app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.graph.follow'];
  return () => `${collections[Math.floor(rand() * collections.length)]}/3l${Math.floor(rand() * 2 ** 40).toString(32).padStart(11, 'a')}`;
};

describe('invertOps', () => {
  it('gives the reference previous root on random trees and commits, from the reference proof blocks alone', async () => {
    let checked = 0;
    for (let seed = 1; seed <= 60; seed++) {
      const rand = rng(seed);
      const nextPath = paths(rand);
      const store = new Recording();
      const wrangler = new NodeWrangler(new NodeStore(store));
      // An empty tree's root is the empty node's CID.
      const empty = MSTNode.empty();
      let root = (await empty.cid()).$link;
      await store.put(root, await empty.serialize());
      const held = new Map<string, string>();
      const size = Math.floor(rand() * (seed % 3 === 0 ? 8 : 300));
      for (let i = 0; i < size; i++) {
        const path = nextPath();
        const v = await valueCid(i);
        root = await wrangler.putRecord(root, path, { $link: v });
        held.set(path, v);
      }
      const prevRoot = root;
      // A commit: up to 6 ops on distinct paths, forward with the reference.
      const ops: { action: 'create' | 'update' | 'delete'; path: string; cid: string | null; prev: string | null }[] = [];
      const used = new Set<string>();
      const nOps = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < nOps; k++) {
        const existing = [...held.keys()].filter((p) => !used.has(p));
        const r = rand();
        if (existing.length > 0 && r < 0.3) {
          const path = existing[Math.floor(rand() * existing.length)]!;
          used.add(path);
          ops.push({ action: 'delete', path, cid: null, prev: held.get(path)! });
          root = await wrangler.deleteRecord(root, path);
        } else if (existing.length > 0 && r < 0.5) {
          const path = existing[Math.floor(rand() * existing.length)]!;
          used.add(path);
          const v = await valueCid(1_000_000 + seed * 100 + k);
          ops.push({ action: 'update', path, cid: v, prev: held.get(path)! });
          root = await wrangler.putRecord(root, path, { $link: v });
        } else {
          const path = nextPath();
          if (held.has(path) || used.has(path)) continue;
          used.add(path);
          const v = await valueCid(2_000_000 + seed * 100 + k);
          ops.push({ action: 'create', path, cid: v, prev: null });
          root = await wrangler.putRecord(root, path, { $link: v });
        }
      }
      // The proof: what the reference reads to invert the ops on the new tree.
      store.read.clear();
      const inverse = new NodeWrangler(new NodeStore(store));
      let back = root;
      for (const op of [...ops].reverse()) back = op.action === 'create' ? await inverse.deleteRecord(back, op.path) : await inverse.putRecord(back, op.path, { $link: op.prev! });
      expect(back, `seed ${seed}`).toBe(prevRoot);
      const proof = new Map<string, Uint8Array>();
      for (const cid of store.read) {
        const bytes = store.blocks.get(cid);
        if (bytes) proof.set(cid, bytes);
      }
      const proofOps: ProofOp[] = ops.map((op) => ({ action: op.action, path: op.path, cid: op.cid ? cidFromString(op.cid)! : null, prev: op.prev ? cidFromString(op.prev)! : null }));
      const got = invertOps(new Source(proof), cidFromString(root)!, proofOps);
      expect(cidToString(got, 0), `seed ${seed}`).toBe(prevRoot);
      checked++;
    }
    expect(checked).toBe(60);
  });

  it('refuses an op that disagrees with the tree, and a proof that lacks a block', async () => {
    const store = new MemoryBlockStore();
    const wrangler = new NodeWrangler(new NodeStore(store));
    const empty = MSTNode.empty();
    let root = (await empty.cid()).$link;
    await store.put(root, await empty.serialize());
    const nextPath = paths(rng(7));
    for (let i = 0; i < 100; i++) root = await wrangler.putRecord(root, nextPath(), { $link: await valueCid(i) });
    const path = nextPath();
    const v = cidFromString(await valueCid(500))!;
    const other = cidFromString(await valueCid(501))!;
    const newRoot = await wrangler.putRecord(root, path, { $link: cidToString(v, 0) });
    const all = new Source(store.blocks);
    const create = (cid: Uint8Array): ProofOp => ({ action: 'create', path, cid, prev: null });
    expect(cidToString(invertOps(all, cidFromString(newRoot)!, [create(v)]), 0)).toBe(root);
    const problem = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        return err instanceof MstProofError ? err.problem : `other: ${String(err)}`;
      }
      return 'none';
    };
    expect(problem(() => invertOps(all, cidFromString(newRoot)!, [create(other)]))).toBe('op-mismatch');
    expect(problem(() => invertOps(all, cidFromString(newRoot)!, [{ action: 'delete', path, cid: null, prev: other }]))).toBe('op-mismatch');
    expect(problem(() => invertOps(all, cidFromString(newRoot)!, [{ action: 'update', path, cid: other, prev: v }]))).toBe('op-mismatch');
    expect(problem(() => invertOps(all, cidFromString(root)!, [create(v)]))).toBe('op-mismatch');
    const onlyRoot = new Map([[newRoot, store.blocks.get(newRoot)!]]);
    expect(problem(() => invertOps(new Source(onlyRoot), cidFromString(newRoot)!, [create(v)]))).toBe('missing-block');
    expect(CID_LENGTH).toBe(36);
  });
});
