import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { copyBinary, copyRows, copyText } from './copy.ts';

let client: pg.Client;
beforeAll(async () => {
  client = new pg.Client({ connectionString: await freshDatabase('copy') });
  await client.connect();
  await client.query('CREATE TABLE t (s text, b bytea, n bigint, d timestamptz)');
  await client.query('CREATE TABLE u (s text, b bytea, n bigint, i integer, d timestamptz, j jsonb)');
});
afterAll(async () => client?.end());

describe('copyRows', () => {
  it('round-trips text with tabs, newlines and backslashes, bytes, nulls, numbers and times', async () => {
    const when = new Date('2026-01-02T03:04:05.678Z');
    const rows = [
      ['plain', new Uint8Array([0, 1, 255]), 42, when],
      ['tab\there\nnew\\line\r', null, null, null],
      ['', new Uint8Array(), -1, when],
    ] as const;
    expect(await copyRows(client, 't', ['s', 'b', 'n', 'd'], rows.map((r) => [...r]))).toBe(3);
    const { rows: back } = await client.query('SELECT s, b, n::int AS n, d FROM t ORDER BY n NULLS FIRST');
    expect(back).toEqual([
      { s: 'tab\there\nnew\\line\r', b: null, n: null, d: null },
      { s: '', b: Buffer.alloc(0), n: -1, d: when },
      { s: 'plain', b: Buffer.from([0, 1, 255]), n: 42, d: when },
    ]);
  });

  it('writes NULL as \\N and leaves ordinary text alone', () => {
    expect(copyText(null)).toBe('\\N');
    expect(copyText('app.bsky.feed.post')).toBe('app.bsky.feed.post');
  });
});

describe('copyBinary', () => {
  it('round-trips text (UTF-8, tabs, newlines), bytes, NULLs, integers, times and JSON, over several chunks', async () => {
    const when = new Date('2026-01-02T03:04:05.678Z');
    const n = 20_000;
    const rows = await copyBinary(client, 'u', ['s', 'b', 'n', 'i', 'd', 'j'], function* (w) {
      w.row(6);
      w.text('tab\there\nnew\\line é ✓');
      w.bytea(new Uint8Array([0, 1, 255]));
      w.int8(-(2 ** 40) - 3);
      w.int4(-7);
      w.timestamptz(when);
      w.jsonb(JSON.stringify({ status: 'active', n: 1 }));
      yield;
      w.row(6);
      w.text(null);
      w.bytea(new Uint8Array([9, 8, 7, 6]), 1, 2);
      w.int8(2 ** 52 + 1);
      w.int4(2 ** 31 - 1);
      w.timestamptz(null);
      w.jsonb(null);
      yield;
      for (let k = 0; k < n; k++) {
        w.row(6);
        w.text(`row ${k}`);
        w.bytea(new Uint8Array(36).fill(k & 255));
        w.int8(k);
        w.int4(k);
        w.timestamptz(null);
        w.jsonb(null);
        yield;
      }
    });
    expect(rows).toBe(n + 2);
    const { rows: back } = await client.query(`SELECT s, b, n::text AS n, i, d, j FROM u WHERE s IS NULL OR s NOT LIKE 'row %'  ORDER BY i`);
    expect(back).toEqual([
      { s: 'tab\there\nnew\\line é ✓', b: Buffer.from([0, 1, 255]), n: String(-(2 ** 40) - 3), i: -7, d: when, j: { status: 'active', n: 1 } },
      { s: null, b: Buffer.from([8, 7]), n: String(2 ** 52 + 1), i: 2 ** 31 - 1, d: null, j: null },
    ]);
    const sum = await client.query(`SELECT count(*)::int AS c, sum(n)::text AS s, min(get_byte(b, 35)) AS lo, max(get_byte(b, 35)) AS hi FROM u WHERE s LIKE 'row %'`);
    expect(sum.rows[0]).toEqual({ c: n, s: String((n * (n - 1)) / 2), lo: 0, hi: 255 });
  });
});
