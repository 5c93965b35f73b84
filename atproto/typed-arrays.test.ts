import { describe, expect, it } from 'vitest';
import { release, resized } from './typed-arrays.ts';

describe('resized', () => {
  it('moves an array that owns its buffer into the new length, its elements kept and the rest zero', () => {
    const a = Uint32Array.from({ length: 1000 }, (_, i) => i + 1);
    const grown = resized(a, 3000);
    expect(grown).toBeInstanceOf(Uint32Array);
    expect(grown.length).toBe(3000);
    expect(grown[999]).toBe(1000);
    expect(grown[1000]).toBe(0);
    expect(grown[2999]).toBe(0);
    // Moved, not copied: the old array is detached, its memory now the new one's.
    expect(a.length).toBe(0);
    expect(a.buffer.detached).toBe(true);
    const shrunk = resized(grown, 10);
    expect([...shrunk]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(grown.length).toBe(0);
  });

  it('copies an array that shares its buffer, leaving the buffer and its other views alone', () => {
    const memory = new ArrayBuffer(64);
    const first = new Int32Array(memory, 0, 8).fill(7);
    const second = new Int32Array(memory, 32, 8).fill(9);
    const grown = resized(second, 12);
    expect([...grown]).toEqual([9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0]);
    expect(grown.buffer).not.toBe(memory);
    expect(memory.detached).toBe(false);
    expect([...first]).toEqual([7, 7, 7, 7, 7, 7, 7, 7]);
    expect(second.length).toBe(8);
    expect([...resized(first.subarray(2, 6), 2)]).toEqual([7, 7]);
    expect(first.length).toBe(8);
  });
});

describe('release', () => {
  it('frees an array that owns its buffer now, and leaves one that shares it to the collector', () => {
    const own = new Uint8Array(1 << 20).fill(1);
    const before = process.memoryUsage().arrayBuffers;
    release(own);
    expect(own.length).toBe(0);
    expect(own.buffer.detached).toBe(true);
    // Gone from the process's array buffers at once, with no collection.
    expect(before - process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(1 << 20);
    const memory = new ArrayBuffer(16);
    const view = new Uint8Array(memory, 0, 8).fill(3);
    const other = new Uint8Array(memory, 8, 8).fill(4);
    release(view);
    expect(memory.detached).toBe(false);
    expect([...view, ...other]).toEqual([3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]);
    release(undefined);
    release(own); // already let go: nothing happens
  });
});
