/** The visited set: exact membership for a million nodes, and its memory per node measured. */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { Node } from './nodes.ts';
import { VisitedSet } from './visited.ts';

function cidNode(type: 'Record' | 'Block', seed: Buffer, i: number): Node {
  const cid = new Uint8Array(36);
  cid.set([1, 0x71, 0x12, 0x20]);
  cid.set(seed.subarray(0, 28), 4);
  new DataView(cid.buffer).setUint32(32, i);
  return { type, cid };
}

describe('VisitedSet', () => {
  it('holds a million nodes in at most 24 bytes each, with exact membership', () => {
    const seed = randomBytes(32);
    const set = new VisitedSet();
    let worst = 0;
    const n = 1_000_000;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      expect(set.add(cidNode('Record', seed, i))).toBe(true);
      if (i > 10_000) worst = Math.max(worst, set.byteLength / set.size);
    }
    const ms = performance.now() - started;
    expect(set.size).toBe(n);
    // Every size past the first table was measured, including right after each growth.
    expect(worst).toBeLessThanOrEqual(24);
    console.log(`visited set: ${n} nodes, ${(set.byteLength / n).toFixed(1)} bytes/node now, worst ${worst.toFixed(1)}, ${Math.round(n / (ms / 1000))} adds/s (with test overhead)`);
    for (let i = 0; i < n; i += 7) expect(set.add(cidNode('Record', seed, i))).toBe(false);
    // The same CID as another node type is another node.
    expect(set.has(cidNode('Block', seed, 5))).toBe(false);
    expect(set.has(cidNode('Record', seed, n + 1))).toBe(false);
  });

  it('keys nodes by type and key, whatever hints they carry', () => {
    const set = new VisitedSet();
    expect(set.add({ type: 'Repo', did: 'did:plc:abc' })).toBe(true);
    expect(set.add({ type: 'Repo', did: 'did:plc:abc' })).toBe(false);
    expect(set.add({ type: 'RecordRow', did: 'did:plc:abc', collection: 'a.b.c', rkey: 'x', row: { cid: new Uint8Array(36) } })).toBe(true);
    expect(set.has({ type: 'RecordRow', did: 'did:plc:abc', collection: 'a.b.c', rkey: 'x' })).toBe(true);
    expect(set.add({ type: 'Pack', key: 'did:plc:abc' })).toBe(true);
    expect(set.add({ type: 'Event', id: '1' })).toBe(true);
    expect(set.add({ type: 'Event', id: '2' })).toBe(true);
    expect(set.size).toBe(5);
  });

  it('keeps a pack its identity when hashed again, after other packs and nodes or under a key equal but not the same string', () => {
    const set = new VisitedSet();
    const a = `packs/aa/${'a'.repeat(64)}.car`;
    const b = `packs/bb/${'b'.repeat(64)}.car`;
    expect(set.add({ type: 'Pack', key: a })).toBe(true);
    expect(set.add({ type: 'Pack', key: a })).toBe(false);
    expect(set.add({ type: 'Pack', key: b })).toBe(true);
    expect(set.add({ type: 'Repo', did: a })).toBe(true);
    expect(set.add({ type: 'Pack', key: ['packs/aa/', 'a'.repeat(64), '.car'].join('') })).toBe(false);
    expect(set.has({ type: 'Pack', key: b })).toBe(true);
    expect(set.has({ type: 'Pack', key: b.replace('bb/b', 'bb/c') })).toBe(false);
    expect(set.size).toBe(3);
  });
});
