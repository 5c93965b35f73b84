import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { keyLayer, layerOfDigest } from './key-layer.ts';
import { parsePath } from './mst.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, MstNodeFormatError, PREFIX, RIGHT, VALUE, decodeMstNode } from './mst-node.ts';
import { cidFor } from './testing/car-edit.ts';
import { referenceLayer } from './testing/craft-mst.ts';

const bytesOf = (s: string) => new TextEncoder().encode(s);

describe('keyLayer', () => {
  it('agrees with the reference implementation, short keys and long', async () => {
    const keys: string[] = [];
    for (let i = 0; i < 3000; i++) keys.push(`app.bsky.feed.post/3k${i.toString(36).padStart(11, '2')}`);
    for (let i = 0; i < 200; i++) keys.push(`com.example.${'x'.repeat(i % 90)}/${i}`); // up to and past one SHA-256 block
    for (let len = 50; len <= 60; len++) keys.push('a'.repeat(len));
    let maxLayer = 0;
    for (const key of keys) {
      const bytes = bytesOf(key);
      const layer = keyLayer(bytes, bytes.length);
      expect(layer, key).toBe(await referenceLayer(key));
      maxLayer = Math.max(maxLayer, layer);
    }
    expect(maxLayer).toBeGreaterThanOrEqual(3);
  });

  it('reads only the key\'s bytes from a larger buffer', () => {
    const buffer = bytesOf('app.bsky.feed.like/3kabcdefghijkXXXXXXXX');
    expect(keyLayer(buffer, 32)).toBe(keyLayer(bytesOf('app.bsky.feed.like/3kabcdefghijk'), 32));
  });

  it('counts zero bits past the first word (the path for mined keys)', async () => {
    const digest = new Uint8Array(32);
    digest[4] = 0x01; // 39 leading zero bits
    expect(layerOfDigest(digest)).toBe(19);
    expect(layerOfDigest(new Uint8Array(32))).toBe(128);
    expect(layerOfDigest(createHash('sha256').update('x').digest())).toBe(await referenceLayer('x'));
  });
});

describe('parsePath', () => {
  it('accepts NSID/record-key paths', () => {
    for (const path of ['app.bsky.feed.post/3kabcdefghijk', 'app.bsky.actor.profile/self', 'com.example.thing/a:b~c_d.e-f']) {
      expect(parsePath(path), path).toBe(path.indexOf('/'));
    }
  });

  it('refuses everything else', () => {
    for (const path of ['', 'app.bsky.feed.post', '/rkey', 'app.bsky.feed.post/', 'app.bsky.feed.post/a/b', 'nsid/rkey', 'app.bsky.feed.post/..', 'app.bsky.feed.post/a b', `app.bsky.feed.post/${'a'.repeat(1020)}`]) {
      expect(parsePath(path), path).toBe(-1);
    }
  });
});

describe('decodeMstNode', () => {
  const link = CID.toCidLink(CID.fromString(cidFor(bytesOf('a record'))));
  const entry = { k: CBOR.toBytes(bytesOf('app.bsky.feed.post/3kabcdefghijk')), p: 0, t: null, v: link };

  it('reads a node in place, into a reused array when it fits', () => {
    const bytes = CBOR.encode({ e: [entry, { ...entry, k: CBOR.toBytes(bytesOf('l')), p: 30, t: link }], l: link });
    const node = decodeMstNode(bytes);
    expect(node.count).toBe(2);
    const field = (i: number, f: number) => node.entries[i * ENTRY_FIELDS + f]!;
    expect(new TextDecoder().decode(bytes.subarray(field(0, KEY_START), field(0, KEY_END)))).toBe('app.bsky.feed.post/3kabcdefghijk');
    expect(field(1, PREFIX)).toBe(30);
    expect(CID.toString(CID.decode(bytes.subarray(field(0, VALUE), field(0, VALUE) + 36)))).toBe(link.$link);
    expect(field(0, RIGHT)).toBe(-1);
    expect(field(1, RIGHT)).toBeGreaterThan(0);
    expect(node.left).toBeGreaterThan(0);
    const reused = new Int32Array(2 * ENTRY_FIELDS);
    expect(decodeMstNode(bytes, reused).entries).toBe(reused);
    expect(decodeMstNode(bytes, new Int32Array(ENTRY_FIELDS)).entries.length).toBeGreaterThanOrEqual(2 * ENTRY_FIELDS);
  });

  it('refuses anything but the canonical node layout', () => {
    const bad: [string, unknown][] = [
      ['extra field', { e: [], l: null, x: 1 }],
      ['missing l', { e: [] }],
      ['e not an array', { e: {}, l: null }],
      ['entry with extra field', { e: [{ ...entry, z: 1 }], l: null }],
      ['entry without t', { e: [{ k: entry.k, p: 0, v: link }], l: null }],
      ['prefix not an integer', { e: [{ ...entry, p: 'x' }], l: null }],
      ['v null', { e: [{ ...entry, v: null }], l: null }],
      ['key as text', { e: [{ ...entry, k: 'app.bsky.feed.post/x' }], l: null }],
    ];
    for (const [why, value] of bad) expect(() => decodeMstNode(CBOR.encode(value)), why).toThrow(MstNodeFormatError);
    expect(() => decodeMstNode(Buffer.concat([CBOR.encode({ e: [], l: null }), Uint8Array.of(0)])), 'trailing byte').toThrow('after the node');
    // p = 5 encoded in two bytes (0x18 0x05) instead of one
    const node = CBOR.encode({ e: [{ ...entry, p: 24 }], l: null });
    const at = node.indexOf(0x18);
    const nonMinimal = Buffer.concat([node.subarray(0, at), Uint8Array.of(0x18, 0x05), node.subarray(at + 2)]);
    expect(() => decodeMstNode(nonMinimal)).toThrow('not minimally encoded');
    expect(() => decodeMstNode(Uint8Array.of(0xa2, 0x61, 0x65, 0x9a, 0x7f, 0xff, 0xff, 0xff))).toThrow('more than the node');
  });
});
