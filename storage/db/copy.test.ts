import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { copyRows, copyText } from './copy.ts';

let client: pg.Client;
beforeAll(async () => {
  client = new pg.Client({ connectionString: await freshDatabase('copy') });
  await client.connect();
  await client.query('CREATE TABLE t (s text, b bytea, n bigint, d timestamptz)');
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
