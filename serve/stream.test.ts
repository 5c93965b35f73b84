/**
 * The event stream against the `@atproto/tap` client and a raw WebSocket, over an event log
 * written straight into PostgreSQL (records in a real pack in a real blobstore): message shapes
 * the client accepts, acks and consumer positions, cursor replay, and dropping a client that
 * stops reading.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, rename, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import * as CBOR from '@atcute/cbor';
import { Tap } from '@atproto/tap';
import { WebSocket } from 'ws';
import { freshDatabase } from '../test/stack.ts';
import { openPool, withTransaction } from '../storage/db/pool.ts';
import { EVENT_WRITER } from '../storage/event-horizon.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { PackWriter, storePack } from '../storage/packs.ts';
import { startServeServer, type ServeServer } from './server.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
let server: ServeServer;
const DID = 'did:plc:streamtestaaaaaaaaaaaaaa';

function recordCid(bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([1, 0x71, 0x12, 0x20]), createHash('sha256').update(bytes).digest()]);
}

/** Appends `n` create events (and their record blocks, in one pack); returns their ids. */
async function appendEvents(n: number, origin: 'backfill' | 'live' = 'backfill'): Promise<number[]> {
  const writer = new PackWriter();
  const rows: Array<[string, Buffer]> = [];
  const base = Date.now();
  for (let i = 0; i < n; i++) {
    const rkey = `3k${(base * 1000 + i).toString(32).padStart(11, 'a').slice(-11)}`;
    const bytes = CBOR.encode({ $type: 'app.bsky.feed.post', text: `post ${i}`, createdAt: new Date(base).toISOString() });
    const cid = recordCid(bytes);
    writer.add(cid, bytes);
    rows.push([rkey, cid]);
  }
  await storePack(store, pool, writer);
  // As every writer of events does (storage/event-horizon.ts).
  const { rows: ids } = await withTransaction(
    pool,
    (tx) =>
      tx.query<{ id: string }>(
        `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin)
         SELECT $1, 'create', 'app.bsky.feed.post', r, c, '3kaaaaaaaaaaa', $4 FROM unnest($2::text[], $3::bytea[]) AS t(r, c) RETURNING id`,
        [DID, rows.map((r) => r[0]), rows.map((r) => r[1]), origin],
      ),
    EVENT_WRITER,
  );
  return ids.map((r) => Number(r.id));
}

/** An event writer's transaction that took an id (an account event) and stays open until `commit()`. */
async function openWriter(): Promise<{ id: number; commit: () => Promise<void> }> {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let took!: (id: number) => void;
  const id = new Promise<number>((r) => (took = r));
  const done = withTransaction(
    pool,
    async (tx) => {
      const { rows } = await tx.query<{ id: string }>(`INSERT INTO events (did, kind, origin, detail) VALUES ($1, 'account', 'live', '{"status":"active"}') RETURNING id`, [DID]);
      took(Number(rows[0]!.id));
      await held;
    },
    EVENT_WRITER,
  );
  done.catch(() => {});
  return { id: await id, commit: () => (release(), done) };
}

/** A tap client of consumer `name` that acks each event and keeps its id, as the cut and out-of-order tests use it. */
function ackingConsumer(name: string): { seen: number[]; channel: ReturnType<Tap['channel']>; running: Promise<void> } {
  const tap = new Tap(`${server.url}/?consumer=${name}`);
  const seen: number[] = [];
  const channel = tap.channel({
    onEvent: async (evt, opts) => {
      await opts.ack();
      seen.push(evt.id);
    },
    onError: () => {},
  });
  return { seen, channel, running: channel.start() };
}

/** The ids a raw cursor client receives, as they come. */
function listen(url: string, cursor: number): { got: number[]; close: () => void } {
  const got: number[] = [];
  const ws = new WebSocket(`${url.replace('http', 'ws')}/channel?cursor=${cursor}`);
  ws.on('message', (data) => got.push((JSON.parse(String(data)) as { id: number }).id));
  return { got, close: () => ws.close() };
}

beforeAll(async () => {
  pool = openPool(await freshDatabase('serve_stream'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-serve-stream-'));
  store = new LocalBlobStore(dir);
  await pool.query(`INSERT INTO repos (did, status, handle) VALUES ($1, 'active', 'stream.test')`, [DID]);
  server = await startServeServer({ pool, store, stream: { stallTimeoutMs: 2000, pollMs: 50 }, log: (l) => console.error(l) });
});

afterAll(async () => {
  await server?.close();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('tap protocol', () => {
  it('the tap client parses every event, acks, and a new connection of the consumer resumes after the acked ones', async () => {
    const first = await appendEvents(300);
    const tap = new Tap(`${server.url}/?consumer=unit`);
    const seen: Array<{ id: number; live: boolean; text: unknown }> = [];
    const errors: unknown[] = [];
    const channel = tap.channel({
      onEvent: async (evt, opts) => {
        await opts.ack();
        // Processed: the ack reached the server. An event whose ack never got out is not, and
        // comes again.
        if (evt.type === 'record') seen.push({ id: evt.id, live: evt.live, text: evt.record?.text });
      },
      onError: (err) => errors.push(err),
    });
    const running = channel.start();
    await until('300 events', () => seen.length >= 300);
    expect(errors).toEqual([]);
    expect(seen.map((s) => s.id)).toEqual(first);
    expect(seen[0]).toMatchObject({ live: false, text: 'post 0' });
    await channel.destroy();
    await running;

    const later = await appendEvents(50, 'live');
    const again = tap.channel({
      onEvent: async (evt, opts) => {
        await opts.ack();
        // Processed: the ack reached the server. An event whose ack never got out is not, and
        // comes again.
        if (evt.type === 'record') seen.push({ id: evt.id, live: evt.live, text: evt.record?.text });
      },
      onError: (err) => errors.push(err),
    });
    const running2 = again.start();
    await until('50 more', () => seen.length >= 350);
    await new Promise((r) => setTimeout(r, 300));
    await again.destroy();
    await running2;
    expect(errors).toEqual([]);
    expect(seen.map((s) => s.id)).toEqual([...first, ...later]);
    expect(seen.at(-1)!.live).toBe(true);
  });

  it('a connection cut: the tap client reconnects by itself, and nothing is lost or repeated', async () => {
    const ids = await appendEvents(1000);
    await pool.query(`INSERT INTO job_state (key, value) VALUES ('serve/consumer/cut', jsonb_build_object('acked', $1::bigint))`, [ids[0]! - 1]);
    const { seen, channel, running } = ackingConsumer('cut');
    await until('the first 1000', () => seen.length >= 1000);
    await new Promise((r) => setTimeout(r, 200));
    // A crash or a network cut under a caught-up client: no close handshake.
    server.stream.cutAll();
    const more = await appendEvents(500, 'live');
    await until('the events appended while it was away', () => seen.length >= 1500, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    await channel.destroy();
    await running;
    expect(seen).toEqual([...ids, ...more]);
  });

  it('cursor replay: a consumer reconnecting with its last id resumes without loss', async () => {
    await appendEvents(400);
    const { rows } = await pool.query<{ id: string }>('SELECT id FROM events ORDER BY id');
    const all = rows.map((r) => Number(r.id));
    const collect = (cursor: number, count: number) =>
      new Promise<number[]>((resolve, reject) => {
        const got: number[] = [];
        const ws = new WebSocket(`${server.url.replace('http', 'ws')}/channel?cursor=${cursor}`);
        ws.on('message', (data) => {
          // Messages already on the way after the close are not the consumer's.
          if (got.length === count) return;
          got.push((JSON.parse(String(data)) as { id: number }).id);
          if (got.length === count) {
            ws.close();
            resolve(got);
          }
        });
        ws.on('error', reject);
      });
    const a = await collect(0, 123);
    const b = await collect(a.at(-1)!, all.length - 123);
    expect([...a, ...b]).toEqual(all);
  });
});

describe('events whose transactions commit out of id order', () => {
  it('an event committed after a later id is sent, in id order, and the later one waits for it', async () => {
    const early = await openWriter();
    const later = await appendEvents(3, 'live');
    expect(later[0]!).toBeGreaterThan(early.id);
    const cursorClient = listen(server.url, early.id - 1);
    await pool.query(`INSERT INTO job_state (key, value) VALUES ('serve/consumer/out-of-order', jsonb_build_object('acked', $1::bigint))`, [early.id - 1]);
    const { seen, channel, running } = ackingConsumer('out-of-order');
    try {
      // Ten polls of the log (pollMs 50): the later events are committed and visible, but not
      // sent while a transaction that took an earlier id may still commit.
      await new Promise((r) => setTimeout(r, 500));
      expect(cursorClient.got).toEqual([]);
      expect(seen).toEqual([]);
      // The four ids held back are on the server's metrics.
      const metricsText = await (await fetch(`${server.url}/metrics`)).text();
      expect(Number(/^repowalk_serve_stream_held_events (\d+)$/m.exec(metricsText)?.[1])).toBeGreaterThanOrEqual(4);
      await early.commit();
      await until('every event, to both', () => cursorClient.got.length >= 4 && seen.length >= 4);
      expect(cursorClient.got).toEqual([early.id, ...later]);
      expect(seen).toEqual([early.id, ...later]);
    } finally {
      cursorClient.close();
      await channel.destroy();
      await running;
    }
  });

  it('an id whose transaction rolls back holds nothing back once it has', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let took!: (id: number) => void;
    const taken = new Promise<number>((r) => (took = r));
    const rolledBack = withTransaction(
      pool,
      async (tx) => {
        const { rows } = await tx.query<{ id: string }>(`INSERT INTO events (did, kind, origin) VALUES ($1, 'identity', 'live') RETURNING id`, [DID]);
        took(Number(rows[0]!.id));
        await held;
        throw new Error('rolled back on purpose');
      },
      EVENT_WRITER,
    );
    const gap = await taken;
    const later = await appendEvents(2, 'live');
    const client = listen(server.url, gap - 1);
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(client.got).toEqual([]);
      release();
      await expect(rolledBack).rejects.toThrow('rolled back on purpose');
      await until('the events after the gap', () => client.got.length >= 2);
      expect(client.got).toEqual(later);
    } finally {
      client.close();
    }
  });

  it('a long transaction that writes no event holds nothing back', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let began!: () => void;
    const open = new Promise<void>((r) => (began = r));
    // A write (so a transaction id), in a transaction that is not an event writer: GC, psql.
    const other = withTransaction(pool, async (tx) => {
      await tx.query(`UPDATE repos SET updated_at = now() WHERE did = $1`, [DID]);
      began();
      await held;
    });
    await open;
    const ids = await appendEvents(5, 'live');
    const client = listen(server.url, ids[0]! - 1);
    try {
      await until('the events', () => client.got.length >= 5);
      expect(client.got).toEqual(ids);
    } finally {
      client.close();
      release();
      await other;
    }
  });
});

describe('records read for the stream', () => {
  /** Every message after `cursor` up to the last event, by raw WebSocket. */
  const replay = (url: string, cursor: number, count: number) =>
    new Promise<Array<{ id: number; record: { rkey: string; record?: unknown } }>>((resolve, reject) => {
      const got: Array<{ id: number; record: { rkey: string; record?: unknown } }> = [];
      const ws = new WebSocket(`${url.replace('http', 'ws')}/channel?cursor=${cursor}`);
      ws.on('message', (data) => {
        if (got.length === count) return;
        got.push(JSON.parse(String(data)));
        if (got.length === count) {
          ws.close();
          resolve(got);
        }
      });
      ws.on('error', reject);
    });
  const packOf = async (id: number) =>
    (await pool.query<{ key: string; byte_offset: string }>('SELECT p.key, b.byte_offset FROM events e JOIN blocks b ON b.cid = e.cid JOIN packs p ON p.id = b.pack_id WHERE e.id = $1', [id])).rows[0]!;

  it('a record whose pack is damaged goes out without its record, the others with theirs; a pack that is gone, all without', async () => {
    const ids = await appendEvents(30);
    const { key, byte_offset } = await packOf(ids[7]!);
    const path = join(dir, key);
    const good = await readFile(path);
    const bad = Buffer.from(good);
    bad[Number(byte_offset) + 2]! ^= 0xff; // a byte of event 7's record
    await writeFile(path, bad);
    try {
      const got = await replay(server.url, ids[0]! - 1, ids.length);
      expect(got.map((m) => m.id)).toEqual(ids);
      expect(got.filter((m) => m.record.record === undefined).map((m) => m.id)).toEqual([ids[7]]);
    } finally {
      await writeFile(path, good);
    }
    const gone = await appendEvents(10);
    const other = join(dir, (await packOf(gone[0]!)).key);
    await rename(other, `${other}.away`);
    try {
      const got = await replay(server.url, gone[0]! - 1, gone.length);
      expect(got.map((m) => m.id)).toEqual(gone);
      expect(got.every((m) => m.record.record === undefined)).toBe(true);
    } finally {
      await rename(`${other}.away`, other);
    }
  });

  it('clients reading the same stretch of the log share each page: one query per page, not one per client', async () => {
    const ids = await appendEvents(400);
    let pageQueries = 0;
    const counted = Object.create(pool) as pg.Pool;
    counted.query = ((...args: Parameters<pg.Pool['query']>) => {
      if (String(args[0]).includes('FROM events e')) pageQueries++;
      return (pool.query as (...a: unknown[]) => unknown)(...args);
    }) as pg.Pool['query'];
    const shared = await startServeServer({ pool: counted, store, stream: { pageSize: 100, pollMs: 50 }, log: () => {} });
    try {
      const all = await Promise.all(Array.from({ length: 10 }, () => replay(shared.url, ids[0]! - 1, ids.length)));
      for (const got of all) expect(got.map((m) => m.id)).toEqual(ids);
      // 4 pages of 100 events, and at most a few reads of the (short) head page.
      expect(pageQueries).toBeLessThanOrEqual(4 + 10);
      expect(pageQueries).toBeGreaterThanOrEqual(4);
    } finally {
      await shared.close();
    }
  });
});

describe('clients the server drops, with a reason', () => {
  const closeOf = (ws: WebSocket) => new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));

  it('a consumer that acks nothing is closed once its unacked window is full for the stall timeout', async () => {
    await appendEvents(300);
    const strict = await startServeServer({ pool, store, stream: { maxUnacked: 100, stallTimeoutMs: 1000, pollMs: 50, ackGraceMs: 0 }, log: () => {} });
    try {
      const ws = new WebSocket(`${strict.url.replace('http', 'ws')}/channel?consumer=never-acks`);
      let got = 0;
      ws.on('message', () => got++);
      const closed = await closeOf(ws);
      expect(closed.code).toBe(1008);
      expect(closed.reason).toMatch(/no acks for 1000 ms with 100 events unacked/);
      expect(got).toBe(100);
    } finally {
      await strict.close();
    }
  });

  it('a message that is not an ack closes the connection with 1003', async () => {
    const ws = new WebSocket(`${server.url.replace('http', 'ws')}/channel?cursor=0`);
    ws.on('message', () => {});
    await new Promise((r) => ws.once('open', r));
    ws.send('{"type":"hello"}');
    const closed = await closeOf(ws);
    expect(closed.code).toBe(1003);
    expect(closed.reason).toMatch(/expected \{"type":"ack"/);
  });
});
