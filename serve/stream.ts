/**
 * The event stream: tap's WebSocket protocol over the event log, as the official `@atproto/tap`
 * client speaks it. Each event is one text message, `{ id, type: 'record', record: { did, rev,
 * collection, rkey, action, record?, cid?, live } }` or `{ id, type: 'identity', identity: {
 * did, handle, is_active, status } }`; the client answers `{ type: 'ack', id }`.
 *
 * Two ways to say where to start:
 * - `?cursor=N` (hydrant-style replay): events with id > N, acks not needed. A consumer that
 *   reconnects with the last id it processed resumes without loss.
 * - no cursor (what the tap client does): the server keeps the consumer's position, named by
 *   `?consumer=NAME` (default `default`), as the highest id below which every event sent was
 *   acked; it is kept in `job_state` and survives restarts. A reconnect resends everything
 *   after that position, so nothing is lost, and an event acked before the disconnect is not
 *   sent again.
 *
 * Backpressure: events are read from PostgreSQL one page at a time, and only while the
 * socket's send buffer is below `highWaterBytes` and the client has fewer than `maxUnacked`
 * events unacked; so memory per client is at most two pages (one being sent, the next being
 * read) plus the buffer mark, and the pages kept for all clients to share (`pageCacheBytes`):
 * each page is queried and encoded once, however many clients read it. A client whose buffer does not drain (or who acks nothing) for
 * `stallTimeoutMs` is closed with code 1008 and a reason saying why, then cut off if it does not
 * read the close either.
 */
import type pg from 'pg';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { cidToString } from '../atproto/cid.ts';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackBlockReader } from './blocks.ts';
import * as metrics from './metrics.ts';
import { decode as decodeCbor } from '@atcute/cbor';
import { EventHead } from './event-head.ts';

export interface StreamOptions {
  /** Events read per query. Default 5000. */
  pageSize?: number;
  /**
   * Bytes of encoded pages kept for every client to share, while more than one is connected:
   * clients reading the same stretch of the log (a replay, or the live tail) cost one query and
   * one encoding per page, not one per client. Default 32 MiB.
   */
  pageCacheBytes?: number;
  /** Stop reading events while a client's send buffer holds more than this. Default 4 MiB. */
  highWaterBytes?: number;
  /** Most events sent and not yet acked, in consumer mode. Default 20,000. */
  maxUnacked?: number;
  /** A client that makes no progress for this long is dropped. Default 30 s. */
  stallTimeoutMs?: number;
  /** How often the log is checked for new events once a client is caught up. Default 200 ms. */
  pollMs?: number;
  /** Consumer mode: how long to take acks before sending, on connect. Default 200 ms. */
  ackGraceMs?: number;
  /** Bytes of whole packs the stream keeps for reading records, shared by all clients. Default 128 MiB. */
  packCacheBytes?: number;
}

export const StreamQuery = z.object({
  cursor: z.coerce.number({ error: 'must be an event id (an integer ≥ 0)' }).int('must be an event id (an integer ≥ 0)').min(0, 'must be an event id (an integer ≥ 0)').max(Number.MAX_SAFE_INTEGER).optional(),
  consumer: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1 to 64 of A-Z a-z 0-9 . _ -').default('default'),
});
export type StreamQuery = z.infer<typeof StreamQuery>;

const Ack = z.object({ type: z.literal('ack'), id: z.number().int().min(0) });

interface EventRow {
  id: string;
  did: string;
  kind: string;
  collection: string | null;
  rkey: string | null;
  cid: Buffer | null;
  rev: string | null;
  origin: string;
  detail: { status?: string; handle?: string } | null;
  handle: string | null;
  repo_status: string | null;
  gone_status: string | null;
}

/** One event as sent: its id and its message, encoded once (UTF-8) for every client. */
export interface EncodedEvent {
  id: number;
  message: Buffer;
}

const ACCOUNT_STATUSES = new Set(['active', 'takendown', 'suspended', 'deactivated', 'deleted']);

export interface ClientStats {
  consumer: string | null;
  position: number;
  unacked: number;
  bufferedBytes: number;
  maxBufferedBytes: number;
}

export class EventStream {
  readonly #pool: pg.Pool;
  readonly #opts: Required<StreamOptions>;
  readonly #head: EventHead;
  // Shared by every client: consumers replaying the same stretch of the log read the same
  // packs, which are read whole once and kept (up to packCacheBytes).
  readonly #store: BlobStore;
  #records: PackBlockReader;
  readonly #clients = new Set<StreamClient>();
  /** Acked positions of consumers, ahead of what PostgreSQL holds (saved every second). */
  readonly #positions = new Map<string, number>();
  readonly #dirty = new Set<string>();
  #saver: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #running = new Set<Promise<void>>();
  readonly #pages = new Map<number, { page: Promise<EncodedEvent[]>; bytes: number }>();
  #pageBytes = 0;

  constructor(pool: pg.Pool, store: BlobStore, opts: StreamOptions = {}) {
    this.#pool = pool;
    this.#opts = { pageSize: 5000, pageCacheBytes: 32 * 1024 * 1024, highWaterBytes: 4 * 1024 * 1024, maxUnacked: 20_000, stallTimeoutMs: 30_000, pollMs: 200, ackGraceMs: 200, packCacheBytes: 128 * 1024 * 1024, ...opts };
    this.#head = new EventHead(pool, this.#opts.pollMs);
    this.#store = store;
    this.#records = this.#newRecordReader();
    this.#saver = setInterval(() => void this.#savePositions(), 1000);
    this.#saver.unref();
  }

  get options(): Readonly<Required<StreamOptions>> {
    return this.#opts;
  }

  stats(): ClientStats[] {
    return [...this.#clients].map((c) => c.stats());
  }

  /** Serves one connected socket until it closes. */
  async serve(ws: WebSocket, query: StreamQuery): Promise<void> {
    const consumer = query.cursor === undefined ? query.consumer : null;
    const start = query.cursor ?? (await this.#position(query.consumer));
    const client = new StreamClient(this, ws, consumer, start);
    this.#clients.add(client);
    metrics.streamClients.set(this.#clients.size);
    const run = client.run().catch((err: unknown) => {
      // A query cut short by the server closing is not a failure of the stream.
      if (client.open) throw err;
    });
    this.#running.add(run);
    try {
      await run;
    } finally {
      this.#running.delete(run);
      this.#clients.delete(client);
      metrics.streamClients.set(this.#clients.size);
      if (consumer) await this.#savePositions();
    }
  }

  async #position(consumer: string): Promise<number> {
    const held = this.#positions.get(consumer);
    if (held !== undefined) return held;
    const { rows } = await this.#pool.query<{ acked: string }>(`SELECT value->>'acked' AS acked FROM job_state WHERE key = $1`, [consumerKey(consumer)]);
    const pos = Number(rows[0]?.acked ?? 0);
    if (!this.#positions.has(consumer)) this.#positions.set(consumer, pos);
    return this.#positions.get(consumer)!;
  }

  /** @internal the client's acked position moved. */
  advance(consumer: string, acked: number): void {
    if ((this.#positions.get(consumer) ?? 0) < acked) {
      this.#positions.set(consumer, acked);
      this.#dirty.add(consumer);
    }
  }

  async #savePositions(): Promise<void> {
    const dirty = [...this.#dirty];
    this.#dirty.clear();
    for (const name of dirty) {
      const acked = this.#positions.get(name)!;
      try {
        await this.#pool.query(
          `INSERT INTO job_state (key, value) VALUES ($1, jsonb_build_object('acked', $2::bigint))
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
           WHERE (job_state.value->>'acked')::bigint < $2::bigint`,
          [consumerKey(name), acked],
        );
      } catch {
        if (!this.#closed) this.#dirty.add(name);
      }
    }
  }

  /** @internal */
  get head(): EventHead {
    return this.#head;
  }

  /**
   * @internal one page of events after `after`, as messages. Full pages are kept (up to
   * `pageCacheBytes`) and a page being read is shared: clients at the same place in the log
   * wait for one query and one encoding. Only ids up to `upTo` are read, a final point of the log
   * (`EventHead.latest`): so a full page is final, and a page shared with a client that had a
   * lower one is at most shorter.
   */
  page(after: number, limit: number, upTo: number): Promise<EncodedEvent[]> {
    if (limit !== this.#opts.pageSize) return this.#readPage(after, limit, upTo);
    const held = this.#pages.get(after);
    if (held) {
      // Touch: Map order is the LRU order.
      this.#pages.delete(after);
      this.#pages.set(after, held);
      return held.page;
    }
    const page = this.#readPage(after, limit, upTo);
    const entry = { page, bytes: 0 };
    this.#pages.set(after, entry);
    page.then(
      (events) => {
        // A short page is the head of the log, which grows: shared while read, never kept. Nor
        // is any page kept for a lone client, which will not read it again.
        if (events.length < limit || this.#clients.size < 2 || this.#pages.get(after) !== entry) {
          if (this.#pages.get(after) === entry) this.#pages.delete(after);
          return;
        }
        for (const e of events) entry.bytes += e.message.length + 64;
        this.#pageBytes += entry.bytes;
        for (const [k, v] of this.#pages) {
          if (this.#pageBytes <= this.#opts.pageCacheBytes) break;
          if (v.bytes === 0) continue;
          this.#pages.delete(k);
          this.#pageBytes -= v.bytes;
        }
      },
      () => {
        if (this.#pages.get(after) === entry) this.#pages.delete(after);
      },
    );
    return page;
  }

  async #readPage(after: number, limit: number, upTo: number): Promise<EncodedEvent[]> {
    const { rows } = await this.#pool.query<EventRow>(
      `SELECT e.id, e.did, e.kind, e.collection, e.rkey, e.cid, e.rev, e.origin, e.detail,
              r.handle, r.status AS repo_status, r.gone_status
       FROM events e LEFT JOIN repos r ON r.did = e.did
       WHERE e.id > $1 AND e.id <= $3 ORDER BY e.id LIMIT $2`,
      [after, limit, upTo],
    );
    const withRecord: number[] = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      if (r.cid !== null && (r.kind === 'create' || r.kind === 'update')) withRecord.push(i);
    }
    const records: (Uint8Array | undefined)[] = new Array(rows.length);
    if (withRecord.length > 0) await this.#readRecords(rows, withRecord, records);
    const out: EncodedEvent[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = { id: Number(rows[i]!.id), message: Buffer.from(toMessage(rows[i]!, records[i])) };
    return out;
  }

  /**
   * The record blocks of a page. A backfill's records sit together in its pack, so the shared
   * reader reads each pack whole once, checks it against its key once, and finds the rest of
   * its blocks in memory: no block index query and no hash per event. A record that cannot be
   * read (not indexed, its pack gone or damaged: then its blocks are read by range, each
   * checked against its CID) goes out without the record, as tap sends an event whose record
   * it no longer holds, rather than stopping the stream.
   */
  async #readRecords(rows: EventRow[], withRecord: number[], into: (Uint8Array | undefined)[]): Promise<void> {
    let reader = this.#records;
    // Generations, not an LRU: a reader that holds most of its budget (or many blocks read by
    // range) is let go whole, and the next page starts a new one.
    if (reader.heldBytes > (this.#opts.packCacheBytes * 3) / 4 || reader.blocks.size > 1_000_000) reader = this.#records = this.#newRecordReader();
    const at = await reader.resolve(
      withRecord.map((i) => rows[i]!.cid!),
      true,
    );
    const map = reader.blocks;
    for (let k = 0; k < withRecord.length; k++) if (at[k]! >= 0) into[withRecord[k]!] = map.dataAt(at[k]!);
  }

  #newRecordReader(): PackBlockReader {
    return new PackBlockReader(this.#pool, this.#store, { wholePackMax: 64 * 1024 * 1024, budgetBytes: this.#opts.packCacheBytes });
  }

  /** Cuts every client's connection without a close handshake, as a crash or a network cut would. */
  cutAll(): void {
    for (const c of this.#clients) c.cut();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#saver);
    for (const c of this.#clients) c.drop(1001, 'server shutting down');
    this.#head.stop();
    // Each client's loop ends at its next step; wait, so that none queries a closed pool.
    await Promise.allSettled([...this.#running]);
    await this.#savePositions();
  }
}

function consumerKey(name: string): string {
  return `serve/consumer/${name}`;
}

function toMessage(r: EventRow, record: Uint8Array | undefined): string {
  const id = Number(r.id);
  if (r.kind === 'create' || r.kind === 'update' || r.kind === 'delete') {
    const body: Record<string, unknown> = { did: r.did, rev: r.rev ?? '', collection: r.collection, rkey: r.rkey, action: r.kind };
    if (r.cid && r.kind !== 'delete') body.cid = cidToString(r.cid, 0);
    if (record) body.record = decodeCbor(record);
    body.live = r.origin === 'live';
    return JSON.stringify({ id, type: 'record', record: body });
  }
  let status = r.detail?.status ?? (r.repo_status === 'gone' ? (r.gone_status ?? 'deactivated') : r.repo_status === 'active' ? 'active' : 'deleted');
  if (status === 'dropped') status = 'deleted';
  if (!ACCOUNT_STATUSES.has(status)) status = 'active';
  return JSON.stringify({
    id,
    type: 'identity',
    identity: { did: r.did, handle: r.detail?.handle ?? r.handle ?? 'handle.invalid', is_active: status === 'active', status },
  });
}

class StreamClient {
  readonly #stream: EventStream;
  readonly #ws: WebSocket;
  readonly #consumer: string | null;
  #position: number;
  // Ids sent and not acked, in order (consumer mode); `#head` indexes the oldest.
  #unacked: number[] = [];
  #unackedHead = 0;
  readonly #ackedEarly = new Set<number>();
  // Acks for ids past the position, sent by a reconnecting tap client for events it processed
  // before the drop (it buffers acks it could not send): those events are not sent again.
  readonly #preAcked = new Set<number>();
  #open = true;
  #wake: (() => void) | undefined;
  #maxBuffered = 0;

  constructor(stream: EventStream, ws: WebSocket, consumer: string | null, start: number) {
    this.#stream = stream;
    this.#ws = ws;
    this.#consumer = consumer;
    this.#position = start;
    ws.on('message', (data, isBinary) => this.#onMessage(data as Buffer, isBinary));
    ws.on('close', () => {
      this.#open = false;
      this.#wake?.();
    });
    ws.on('error', () => {
      this.#open = false;
      this.#wake?.();
    });
  }

  stats(): ClientStats {
    return { consumer: this.#consumer, position: this.#position, unacked: this.#unacked.length - this.#unackedHead, bufferedBytes: this.#ws.bufferedAmount, maxBufferedBytes: this.#maxBuffered };
  }

  get open(): boolean {
    return this.#open;
  }

  cut(): void {
    this.#open = false;
    this.#wake?.();
    this.#ws.terminate();
  }

  drop(code: number, reason: string): void {
    if (!this.#open) return;
    this.#open = false;
    this.#wake?.();
    this.#ws.close(code, reason);
    // A client that does not read will not read the close frame either.
    setTimeout(() => this.#ws.terminate(), 2000).unref();
  }

  #onMessage(data: Buffer, isBinary: boolean): void {
    let ack: z.infer<typeof Ack>;
    try {
      ack = Ack.parse(JSON.parse(isBinary ? '' : data.toString('utf8')));
    } catch {
      metrics.streamDropped.inc({ reason: 'bad-message' });
      this.drop(1003, 'expected {"type":"ack","id":<event id>}');
      return;
    }
    if (this.#consumer === null) return;
    if (this.#unacked[this.#unackedHead] === ack.id) {
      this.#unackedHead++;
      let acked = ack.id;
      while (this.#unackedHead < this.#unacked.length && this.#ackedEarly.delete(this.#unacked[this.#unackedHead]!)) {
        acked = this.#unacked[this.#unackedHead++]!;
      }
      if (this.#unackedHead > 4096 && this.#unackedHead * 2 > this.#unacked.length) {
        this.#unacked = this.#unacked.slice(this.#unackedHead);
        this.#unackedHead = 0;
      }
      this.#stream.advance(this.#consumer, this.#unackedHead === this.#unacked.length ? this.#position : acked);
      this.#wake?.();
    } else if (ack.id <= this.#position) {
      this.#ackedEarly.add(ack.id);
    } else if (this.#preAcked.size < 100_000) {
      this.#preAcked.add(ack.id);
    }
  }

  get #unackedCount(): number {
    return this.#unacked.length - this.#unackedHead;
  }

  async run(): Promise<void> {
    const { pageSize, highWaterBytes, maxUnacked, stallTimeoutMs, ackGraceMs } = this.#stream.options;
    let prefetch: { after: number; page: Promise<EncodedEvent[]> } | undefined;
    // A reconnecting tap client sends the acks it buffered as soon as the socket opens.
    if (this.#consumer !== null && ackGraceMs > 0) await new Promise((r) => setTimeout(r, ackGraceMs));
    while (this.#open) {
      // Backpressure: wait for the buffer to drain and for acks, up to the stall timeout.
      const waitStart = performance.now();
      while (this.#open && (this.#ws.bufferedAmount > highWaterBytes || (this.#consumer !== null && this.#unackedCount >= maxUnacked))) {
        if (performance.now() - waitStart > stallTimeoutMs) {
          const slow = this.#ws.bufferedAmount > highWaterBytes;
          metrics.streamDropped.inc({ reason: slow ? 'slow' : 'unacked' });
          this.drop(1008, slow ? `consumer too slow: ${this.#ws.bufferedAmount} bytes unread for ${stallTimeoutMs} ms` : `no acks for ${stallTimeoutMs} ms with ${this.#unackedCount} events unacked`);
          return;
        }
        await this.#sleep(10);
      }
      if (!this.#open) return;
      const head = this.#stream.head.latest;
      if (head <= this.#position) {
        await this.#stream.head.waitPast(this.#position, () => this.#open);
        continue;
      }
      const room = this.#consumer === null ? pageSize : Math.min(pageSize, maxUnacked - this.#unackedCount);
      // The next page is read while this one is sent, so the socket does not wait on the query.
      const events = prefetch && prefetch.after === this.#position ? await prefetch.page : await this.#stream.page(this.#position, room, head);
      prefetch = undefined;
      if (events.length === 0) {
        await this.#sleep(this.#stream.options.pollMs);
        continue;
      }
      if (events.length === pageSize && room === pageSize) {
        const after = events.at(-1)!.id;
        prefetch = { after, page: this.#stream.page(after, pageSize, this.#stream.head.latest) };
        prefetch.page.catch(() => {}); // a failure surfaces when it is awaited
      }
      let bytes = 0;
      // Corked: the page goes to the kernel in a few large writes, not one per event.
      const socket = (this.#ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
      socket?.cork();
      try {
        for (const e of events) {
          if (!this.#open) return;
          if (this.#consumer !== null && this.#preAcked.delete(e.id)) {
            this.#position = e.id;
            if (this.#unackedCount === 0) this.#stream.advance(this.#consumer, e.id);
            continue;
          }
          // Text frames: the message is UTF-8 already, encoded once for every client.
          this.#ws.send(e.message, { binary: false });
          bytes += e.message.length;
          this.#position = e.id;
          if (this.#consumer !== null) this.#unacked.push(e.id);
        }
      } finally {
        socket?.uncork();
      }
      this.#maxBuffered = Math.max(this.#maxBuffered, this.#ws.bufferedAmount);
      metrics.streamEvents.inc(events.length);
      metrics.bytesServed.inc({ route: 'stream' }, bytes);
      this.#stream.head.report(this.#position);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(t);
        this.#wake = undefined;
        resolve();
      };
    });
  }
}
