/**
 * The embedded PostgreSQL's memory settings: the buffer cache an eighth of the machine's memory
 * (128 MB–2 GB), the WAL buffers an eighth of that (16–64 MB), and the server the test stack
 * started (stack/stack.ts, as `./repowalk stack up` starts it) runs with both.
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { testStack } from '../test/stack.ts';
import { sharedBuffersMb, walBuffersMb } from './postgres.ts';

const MiB = 1024 * 1024;

describe('embedded PostgreSQL settings', () => {
  it('sizes the buffer cache and the WAL buffers from memory, within their bounds', () => {
    expect(sharedBuffersMb(512 * MiB)).toBe(128);
    expect(sharedBuffersMb(4096 * MiB)).toBe(512);
    expect(sharedBuffersMb(64 * 1024 * MiB)).toBe(2048);
    expect(walBuffersMb(128)).toBe(16);
    expect(walBuffersMb(256)).toBe(32);
    expect(walBuffersMb(512)).toBe(64);
    expect(walBuffersMb(2048)).toBe(64);
  });

  it('the stack started the server with them', async () => {
    const client = new pg.Client({ connectionString: testStack().databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string; setting: string }>(
        `SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'wal_buffers')`,
      );
      // Both in 8 kB pages.
      const pages = Object.fromEntries(rows.map((r) => [r.name, Number(r.setting)]));
      expect(pages.shared_buffers).toBe((sharedBuffersMb() * MiB) / 8192);
      expect(pages.wal_buffers).toBe((walBuffersMb() * MiB) / 8192);
    } finally {
      await client.end();
    }
  });
});
