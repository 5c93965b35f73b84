/**
 * Serving benchmark (issue 10): a signed 100,000-record repo imported by the real importer, then
 * - getRepo: the whole CAR over HTTP, MB/s, and its ratio to reading the same packs raw from the
 *   blobstore (goal: at least half). "Raw" is every byte of the repo's packs read once, in
 *   ranges of the stored plans' range size (`RANGE_MAX`) into two buffers reused across ranges
 *   and runs, as a cold getRepo reads them; the whole pack read into a fresh buffer
 *   (`rawWholeGet`, the raw of earlier runs) is reported beside it. Cold (a fresh server, which has not sent this head: it
 *   reads the head's CAR plan, which the import stored in PostgreSQL, and sends the pack ranges
 *   it names, each checked against its CRC; the first such request is the first serve after the
 *   import), walked (a fresh server and no stored plan, as for a repo whose blocks were stored
 *   by other imports first: the tree is walked and the plan stored), and
 *   warm (the same head again on one server: sent from its plan in memory and the ranges in the
 *   pack cache); and, as the ceiling,
 *   the same pack bytes read and sent as one HTTP body to the same client, and the same bytes
 *   read in ranges into reused buffers and streamed with backpressure (`rawPackStreamedOverHttp`:
 *   what getRepo does, less its plan, its CRC checks and the CAR's framing);
 * - listRecords: 100-record pages paged through one collection, pages/s;
 * - the event stream (cursor replay of the import's 100,000 events): events/s to 1 client and to
 *   10 at once (goal: at least 50,000/s to one).
 * getRepo's headline figures are to a client in its own process (bench/http-count.ts: node:http,
 * counting bytes), so the server owns this process's thread as it would for a user; the CPU
 * figures are then this process's alone, i.e. the server's. The same requests made with `fetch`
 * from this process (client and server on one thread) are kept under `inProcess`. Each figure is
 * given per second of wall time and per second of the server's CPU time: on a shared machine
 * the second is the steadier measure of what the code costs. Prints one JSON object to stdout.
 *
 * Each figure is the median of `--repeat` runs; `pooled` gives the same over all runs together
 * (total bytes over total seconds): a 31 MB read or request sometimes pays for a full garbage
 * collection (an allocation that large triggers one about every other time, ~50–150 ms of CPU on
 * a loaded machine) and sometimes not, so a median of few runs swings with where they fell, for
 * the raw read as much as for getRepo; pooled figures spread them.
 *
 *   node bench/serve.ts --database-url URL [--records 100000] [--repeat 5]
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createServer } from 'node:http';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { scratchDatabase } from './scratch-db.ts';
import { WebSocket } from 'ws';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { buildMirror } from '../test/mirror.ts';
import { DEFAULT_DID } from '../atproto/testing/make-repo.ts';
import { startServeServer } from '../serve/server.ts';
import { RANGE_MAX, decodePlan } from '../storage/car-plans.ts';

const { values } = parseArgs({ options: { records: { type: 'string', default: '100000' }, 'database-url': { type: 'string' }, repeat: { type: 'string', default: '5' } } });
const url = values['database-url'] ?? process.env.DATABASE_URL;
if (!url) throw new Error('bench/serve.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
const records = Number(values.records);
const repeat = Number(values.repeat);
const log = (l: string) => process.stderr.write(`serve: ${l}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Rates of runs of equal size pooled: total size over total time (their harmonic mean). */
const pooled = (rates: number[]) => rates.length / rates.reduce((a, r) => a + 1 / r, 0);
/** CPU seconds (user + system) this process spent since `since`; never 0. */
const cpuSeconds = (since: NodeJS.CpuUsage) => {
  const d = process.cpuUsage(since);
  return Math.max(1e-6, (d.user + d.system) / 1e6);
};

const db = await scratchDatabase(url, 'servebench');
const dbUrl = new URL(db.url);
const pool = await connectPool(dbUrl.toString(), { max: 8 });
await migrate(pool);
const blobDir = mkdtempSync(join(tmpdir(), 'repowalk-bench-serve-'));
const store = new LocalBlobStore(blobDir);
log(`importing a signed ${records}-record repo (built once and cached)`);
await buildMirror({ pool, blobs: store }, [{ did: DEFAULT_DID, records }]);
const server = await startServeServer({ pool, store, log });
let client: ChildProcess | undefined;
try {
  // Raw: every byte of every pack the repo's blocks sit in, read once from the blobstore in
  // ranges of RANGE_MAX (what a stored plan's ranges are) into two buffers reused across ranges
  // and runs — the reads and the buffer policy of a cold getRepo, without its CRC, its query and
  // its socket. Also, as before, each pack read whole into a fresh buffer (`rawWholeGet`).
  const { rows: packs } = await pool.query<{ key: string; size_bytes: string }>('SELECT key, size_bytes FROM packs');
  const rawBuffers = [Buffer.allocUnsafeSlow(RANGE_MAX), Buffer.allocUnsafeSlow(RANGE_MAX)];
  const raw: number[] = [];
  const rawCpu: number[] = [];
  const rawWhole: number[] = [];
  const rawWholeCpu: number[] = [];
  let rawBytes = 0;
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    const c = process.cpuUsage();
    rawBytes = 0;
    let n = 0;
    for (const p of packs) {
      const size = Number(p.size_bytes);
      for (let at = 0; at < size; at += RANGE_MAX) {
        const target = rawBuffers[n++ % 2]!.subarray(0, Math.min(RANGE_MAX, size - at));
        if (!(await store.readInto(p.key, at, target))) throw new Error(`pack ${p.key} is gone`);
        rawBytes += target.length;
      }
    }
    raw.push(rawBytes / 1e6 / ((performance.now() - t) / 1000));
    rawCpu.push(rawBytes / 1e6 / cpuSeconds(c));
  }
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    const c = process.cpuUsage();
    let bytes = 0;
    for (const p of packs) bytes += (await store.get(p.key))!.length;
    rawWhole.push(bytes / 1e6 / ((performance.now() - t) / 1000));
    rawWholeCpu.push(bytes / 1e6 / cpuSeconds(c));
  }

  const fetchRepo = async (url: string) => {
    const t = performance.now();
    const c = process.cpuUsage();
    const res = await fetch(`${url}/xrpc/com.atproto.sync.getRepo?did=${DEFAULT_DID}`);
    if (!res.ok) throw new Error(`getRepo: ${res.status} ${await res.text()}`);
    let bytes = 0;
    for await (const chunk of res.body!) bytes += (chunk as Uint8Array).length;
    return { bytes, mbps: bytes / 1e6 / ((performance.now() - t) / 1000), mbpcs: bytes / 1e6 / cpuSeconds(c) };
  };
  // The client in its own process: one request at a time, answered with the bytes it counted.
  const counter = fork(fileURLToPath(new URL('./http-count.ts', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  client = counter;
  const remote = (url: string) =>
    new Promise<{ bytes: number; mbps: number; mbpcs: number; cpuMs: number }>((resolve, reject) => {
      const t = performance.now();
      const c = process.cpuUsage();
      const died = (code: number | null) => reject(new Error(`the download client exited (${code}) during GET ${url}`));
      counter.once('exit', died);
      counter.once('message', (m: { bytes?: number; status?: number; error?: string }) => {
        counter.off('exit', died);
        const seconds = (performance.now() - t) / 1000;
        const cpu = cpuSeconds(c);
        if (m.error !== undefined || m.status !== 200) return reject(new Error(`GET ${url}: ${m.error ?? m.status}`));
        resolve({ bytes: m.bytes!, mbps: m.bytes! / 1e6 / seconds, mbpcs: m.bytes! / 1e6 / cpu, cpuMs: cpu * 1000 });
      });
      counter.send(url);
    });
  const getRepoUrl = (base: string) => `${base}/xrpc/com.atproto.sync.getRepo?did=${DEFAULT_DID}`;

  // The ceiling: the pack itself, read and sent as one body, to the same client.
  const floorServer = createServer((_req, res) => {
    void Promise.all(packs.map((p) => store.get(p.key))).then((bodies) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (const b of bodies) res.write(b!);
      res.end();
    });
  });
  await new Promise<void>((r) => floorServer.listen(0, '127.0.0.1', () => r()));
  // The same bytes read as a cold getRepo reads them (ranges of RANGE_MAX into two buffers,
  // each reused once the socket has taken it) and sent with backpressure: a CAR server's
  // delivery, without the plan, the CRC and the CAR's own framing.
  const streamBuffers = [Buffer.allocUnsafeSlow(RANGE_MAX), Buffer.allocUnsafeSlow(RANGE_MAX)];
  const streamServer = createServer((_req, res) => {
    void (async () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const written: Promise<void>[] = [Promise.resolve(), Promise.resolve()];
      let n = 0;
      for (const p of packs) {
        const size = Number(p.size_bytes);
        for (let at = 0; at < size; at += RANGE_MAX) {
          const slot = n++ % 2;
          await written[slot];
          const target = streamBuffers[slot]!.subarray(0, Math.min(RANGE_MAX, size - at));
          if (!(await store.readInto(p.key, at, target))) throw new Error(`pack ${p.key} is gone`);
          written[slot] = new Promise<void>((resolve, reject) => res.write(target, (err) => (err ? reject(err) : resolve())));
        }
      }
      res.end();
    })().catch((err: unknown) => res.destroy(err as Error));
  });
  await new Promise<void>((r) => streamServer.listen(0, '127.0.0.1', () => r()));
  const streamUrl = `http://127.0.0.1:${(streamServer.address() as AddressInfo).port}/`;
  const floorUrl = `http://127.0.0.1:${(floorServer.address() as AddressInfo).port}/`;
  const floor: number[] = [];
  const floorCpu: number[] = [];
  // One unmeasured first: the process's first fetch loads and compiles its client.
  for await (const _ of (await fetch(floorUrl)).body!);
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    const c = process.cpuUsage();
    const res = await fetch(floorUrl);
    let bytes = 0;
    for await (const chunk of res.body!) bytes += (chunk as Uint8Array).length;
    floor.push(bytes / 1e6 / ((performance.now() - t) / 1000));
    floorCpu.push(bytes / 1e6 / cpuSeconds(c));
  }
  // One unmeasured request, then `repeat` measured: MB/s and MB per server CPU-second.
  const remoteRuns = async (url: string) => {
    await remote(url);
    const mbps: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const r = await remote(url);
      mbps.push(r.mbps);
      cpu.push(r.mbpcs);
    }
    return [mbps, cpu] as const;
  };
  const [floorRemote, floorRemoteCpu] = await remoteRuns(floorUrl);
  floorServer.close();
  const [streamRemote, streamRemoteCpu] = await remoteRuns(streamUrl);
  streamServer.close();
  log(`the pack read in ranges and streamed over HTTP with backpressure: to a client in another process ${median(streamRemote).toFixed(1)} MB/s (${median(streamRemoteCpu).toFixed(1)} MB/server-cpu-s), ${(median(streamRemote) / median(raw)).toFixed(2)} of the raw read`);
  log(`the pack sent raw over HTTP: to a client in another process ${median(floorRemote).toFixed(1)} MB/s (${median(floorRemoteCpu).toFixed(1)} MB/server-cpu-s), ${(median(floorRemote) / median(raw)).toFixed(2)} of the raw read; to fetch in this process ${median(floor).toFixed(1)} MB/s (${median(floorCpu).toFixed(1)} MB/cpu-s), ${(median(floor) / median(raw)).toFixed(2)}`);

  // Headline: getRepo to the client in its own process. Cold: fresh servers, which have not
  // sent this head; its plan is the one the import stored (the first of them is the first serve
  // after the import).
  const { rows: fromImport } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM repo_car_plans');
  if (Number(fromImport[0]!.n) !== 1) throw new Error(`the import stored ${fromImport[0]!.n} CAR plans, not 1`);
  const coldR: number[] = [];
  const coldRCpu: number[] = [];
  const coldRCpuMs: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const fresh = await startServeServer({ pool, store, log });
    try {
      const r = await remote(getRepoUrl(fresh.url));
      coldR.push(r.mbps);
      coldRCpu.push(r.mbpcs);
      coldRCpuMs.push(r.cpuMs);
    } finally {
      await fresh.close();
    }
  }
  // Walked: fresh servers and no stored plan (dropped before each, as for a repo whose blocks
  // another import stored first): the tree is walked and the plan stored.
  const firstR: number[] = [];
  const firstRCpu: number[] = [];
  const firstRCpuMs: number[] = [];
  for (let i = 0; i < repeat; i++) {
    await pool.query('DELETE FROM repo_car_plans');
    const fresh = await startServeServer({ pool, store, log });
    try {
      const r = await remote(getRepoUrl(fresh.url));
      firstR.push(r.mbps);
      firstRCpu.push(r.mbpcs);
      firstRCpuMs.push(r.cpuMs);
    } finally {
      await fresh.close();
    }
  }
  const { rows: stored } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM repo_car_plans');
  if (Number(stored[0]!.n) !== 1) throw new Error(`after a walk ${stored[0]!.n} CAR plans are stored, not 1`);
  // Walked again, its pack cached: a server with no plans, asked twice. The second walk finds
  // the pack (and its block index) in the pack cache, as a repo does whose batch pack a
  // neighbour's request brought in.
  const cachedR: number[] = [];
  const cachedRCpu: number[] = [];
  const cachedRCpuMs: number[] = [];
  {
    const noPlans = await startServeServer({ pool, store, log, limits: { repoCarPlans: 0, storedCarPlans: false } });
    try {
      await remote(getRepoUrl(noPlans.url));
      for (let i = 0; i < repeat; i++) {
        const r = await remote(getRepoUrl(noPlans.url));
        cachedR.push(r.mbps);
        cachedRCpu.push(r.mbpcs);
        cachedRCpuMs.push(r.cpuMs);
      }
    } finally {
      await noPlans.close();
    }
  }
  // Warm: the same head again, from its plan and the pack cache (a server keeps a head's ranges
  // from its second request on: the first reads them into reused buffers).
  await remote(getRepoUrl(server.url));
  await remote(getRepoUrl(server.url));
  const warmR: number[] = [];
  const warmRCpu: number[] = [];
  const warmRCpuMs: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const r = await remote(getRepoUrl(server.url));
    warmR.push(r.mbps);
    warmRCpu.push(r.mbpcs);
    warmRCpuMs.push(r.cpuMs);
  }
  counter.disconnect();
  client = undefined;
  log(`getRepo to a client in another process: cold (the plan the import stored) ${median(coldR).toFixed(1)} MB/s (${median(coldRCpu).toFixed(1)} MB/server-cpu-s, ${median(coldRCpuMs).toFixed(0)} ms CPU), walked (no stored plan) ${median(firstR).toFixed(1)} MB/s (${median(firstRCpu).toFixed(1)} MB/server-cpu-s, ${median(firstRCpuMs).toFixed(0)} ms CPU), walked with the pack cached ${median(cachedR).toFixed(1)} MB/s (${median(cachedRCpu).toFixed(1)} MB/server-cpu-s, ${median(cachedRCpuMs).toFixed(0)} ms CPU), warm ${median(warmR).toFixed(1)} MB/s (${median(warmRCpu).toFixed(1)} MB/server-cpu-s, ${median(warmRCpuMs).toFixed(0)} ms CPU); ratio to the raw read ${(median(coldR) / median(raw)).toFixed(2)} cold, ${(median(firstR) / median(raw)).toFixed(2)} walked, ${(median(warmR) / median(raw)).toFixed(2)} warm (per CPU-second ${(median(coldRCpu) / median(rawCpu)).toFixed(2)}, ${(median(firstRCpu) / median(rawCpu)).toFixed(2)}, ${(median(warmRCpu) / median(rawCpu)).toFixed(2)}); runs pooled: cold ${(pooled(coldR) / pooled(raw)).toFixed(2)} (per CPU-second ${(pooled(coldRCpu) / pooled(rawCpu)).toFixed(2)})`);

  // Cold: each on a server that has not sent this head (its plan stored).
  const cold: number[] = [];
  const coldCpu: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const fresh = await startServeServer({ pool, store, log });
    try {
      const r = await fetchRepo(fresh.url);
      cold.push(r.mbps);
      coldCpu.push(r.mbpcs);
    } finally {
      await fresh.close();
    }
  }
  // Warm: the same head again on one server (sent from its remembered plan and cached ranges).
  await fetchRepo(server.url);
  const getRepo: number[] = [];
  const getRepoCpu: number[] = [];
  let carBytes = 0;
  for (let i = 0; i < repeat; i++) {
    const r = await fetchRepo(server.url);
    carBytes = r.bytes;
    getRepo.push(r.mbps);
    getRepoCpu.push(r.mbpcs);
  }
  log(`getRepo to fetch in this process: cold ${median(cold).toFixed(1)} MB/s (${median(coldCpu).toFixed(1)} MB/cpu-s), warm ${median(getRepo).toFixed(1)} MB/s (${median(getRepoCpu).toFixed(1)} MB/cpu-s; ${(carBytes / 1e6).toFixed(1)} MB CAR), raw pack read ${median(raw).toFixed(1)} MB/s (${median(rawCpu).toFixed(1)} MB/cpu-s)`);

  const pageRates: number[] = [];
  let pagesRead = 0;
  for (let i = 0; i < repeat; i++) {
    let cursor: string | undefined;
    let pages = 0;
    const t = performance.now();
    do {
      const res = await fetch(`${server.url}/xrpc/com.atproto.repo.listRecords?repo=${DEFAULT_DID}&collection=app.bsky.feed.post&limit=100${cursor ? `&cursor=${cursor}` : ''}`);
      const body = (await res.json()) as { cursor?: string; records: unknown[] };
      cursor = body.records.length === 100 ? body.cursor : undefined;
      pages++;
    } while (cursor && pages < 200);
    pagesRead = pages;
    pageRates.push(pages / ((performance.now() - t) / 1000));
  }
  log(`listRecords ${median(pageRates).toFixed(0)} pages/s of 100 records`);

  const { rows: countRows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM events');
  const events = Number(countRows[0]!.n);
  const streamTo = (clients: number) =>
    new Promise<{ seconds: number; eventsPerSecond: number; perClient: number; eventsPerCpuSecond: number }>((resolve, reject) => {
      const t = performance.now();
      const c0 = process.cpuUsage();
      let finished = 0;
      for (let c = 0; c < clients; c++) {
        let got = 0;
        const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/channel?cursor=0`);
        ws.on('message', () => {
          if (++got === events) {
            ws.close();
            if (++finished === clients) {
              const seconds = (performance.now() - t) / 1000;
              resolve({ seconds, eventsPerSecond: (events * clients) / seconds, perClient: events / seconds, eventsPerCpuSecond: (events * clients) / cpuSeconds(c0) });
            }
          }
        });
        ws.on('error', reject);
      }
    });
  const one: Array<{ seconds: number; eventsPerSecond: number; perClient: number; eventsPerCpuSecond: number }> = [];
  for (let i = 0; i < repeat; i++) one.push(await streamTo(1));
  const ten = await streamTo(10);
  const oneRate = median(one.map((r) => r.eventsPerSecond));
  const oneCpu = median(one.map((r) => r.eventsPerCpuSecond));
  log(`stream ${oneRate.toFixed(0)} events/s (${oneCpu.toFixed(0)}/cpu-s) to 1 client; ${ten.eventsPerSecond.toFixed(0)} events/s (${ten.eventsPerCpuSecond.toFixed(0)}/cpu-s) in all to 10 (${ten.perClient.toFixed(0)} each)`);

  console.log(
    JSON.stringify({
      records,
      carBytes,
      packs: packs.length,
      rawPackReadMBps: median(raw),
      rawPackReadMBperCpuSecond: median(rawCpu),
      rawRangeBytes: RANGE_MAX,
      rawWholeGetMBps: median(rawWhole),
      rawWholeGetMBperCpuSecond: median(rawWholeCpu),
      rawPackOverHttpMBps: median(floorRemote),
      rawPackOverHttpMBperCpuSecond: median(floorRemoteCpu),
      rawPackOverHttpOverRaw: median(floorRemote) / median(raw),
      rawPackStreamedOverHttpMBps: median(streamRemote),
      rawPackStreamedOverHttpMBperCpuSecond: median(streamRemoteCpu),
      getRepoColdOverRawStreamedOverHttp: median(coldR) / median(streamRemote),
      getRepoColdOverRawStreamedOverHttpCpu: median(coldRCpu) / median(streamRemoteCpu),
      getRepoColdMBps: median(coldR),
      getRepoColdMBperCpuSecond: median(coldRCpu),
      getRepoColdCpuMs: median(coldRCpuMs),
      getRepoColdOverRaw: median(coldR) / median(raw),
      getRepoColdOverRawCpu: median(coldRCpu) / median(rawCpu),
      getRepoColdOverRawWholeGet: median(coldR) / median(rawWhole),
      getRepoColdOverRawWholeGetCpu: median(coldRCpu) / median(rawWholeCpu),
      getRepoColdRuns: coldR.map((mbps, i) => ({ mbps, mbPerCpuSecond: coldRCpu[i], cpuMs: coldRCpuMs[i] })),
      getRepoWalkedMBps: median(firstR),
      getRepoWalkedMBperCpuSecond: median(firstRCpu),
      getRepoWalkedCpuMs: median(firstRCpuMs),
      getRepoWalkedOverRaw: median(firstR) / median(raw),
      getRepoWalkedOverRawCpu: median(firstRCpu) / median(rawCpu),
      getRepoPackCachedMBps: median(cachedR),
      getRepoPackCachedMBperCpuSecond: median(cachedRCpu),
      getRepoPackCachedCpuMs: median(cachedRCpuMs),
      getRepoPackCachedOverRaw: median(cachedR) / median(raw),
      getRepoPackCachedOverRawCpu: median(cachedRCpu) / median(rawCpu),
      getRepoMBps: median(warmR),
      getRepoMBperCpuSecond: median(warmRCpu),
      getRepoCpuMs: median(warmRCpuMs),
      getRepoOverRaw: median(warmR) / median(raw),
      getRepoOverRawCpu: median(warmRCpu) / median(rawCpu),
      inProcess: {
        rawPackOverHttpMBps: median(floor),
        rawPackOverHttpMBperCpuSecond: median(floorCpu),
        getRepoColdMBps: median(cold),
        getRepoColdMBperCpuSecond: median(coldCpu),
        getRepoMBps: median(getRepo),
        getRepoMBperCpuSecond: median(getRepoCpu),
      },
      listRecordsPagesPerSecond: median(pageRates),
      listRecordsPagesRead: pagesRead,
      streamEvents: events,
      streamEventsPerSecond1: oneRate,
      streamEventsPerCpuSecond1: oneCpu,
      streamEventsPerCpuSecond10: ten.eventsPerCpuSecond,
      streamEventsPerSecond10Total: ten.eventsPerSecond,
      streamEventsPerSecond10PerClient: ten.perClient,
      pooled: {
        rawPackReadMBps: pooled(raw),
        rawPackReadMBperCpuSecond: pooled(rawCpu),
        rawWholeGetMBps: pooled(rawWhole),
        rawWholeGetMBperCpuSecond: pooled(rawWholeCpu),
        getRepoColdOverRawWholeGet: pooled(coldR) / pooled(rawWhole),
        getRepoColdOverRawWholeGetCpu: pooled(coldRCpu) / pooled(rawWholeCpu),
        getRepoColdOverRawStreamedOverHttp: pooled(coldR) / pooled(streamRemote),
        getRepoColdOverRawStreamedOverHttpCpu: pooled(coldRCpu) / pooled(streamRemoteCpu),
        getRepoColdMBps: pooled(coldR),
        getRepoColdMBperCpuSecond: pooled(coldRCpu),
        getRepoColdOverRaw: pooled(coldR) / pooled(raw),
        getRepoColdOverRawCpu: pooled(coldRCpu) / pooled(rawCpu),
        getRepoWalkedOverRaw: pooled(firstR) / pooled(raw),
        getRepoWalkedOverRawCpu: pooled(firstRCpu) / pooled(rawCpu),
        getRepoOverRaw: pooled(warmR) / pooled(raw),
        getRepoOverRawCpu: pooled(warmRCpu) / pooled(rawCpu),
      },
      rawRuns: raw.map((mbps, i) => ({ mbps, mbPerCpuSecond: rawCpu[i] })),
      rawWholeGetRuns: rawWhole.map((mbps, i) => ({ mbps, mbPerCpuSecond: rawWholeCpu[i] })),
      storedPlanRanges: await pool.query<{ pieces: Buffer }>('SELECT pieces FROM repo_car_plans').then((r) => decodePlan(r.rows[0]!.pieces)!.filter((p) => 'pack' in p).length),
      goals: { getRepoHalfOfRaw: median(warmR) / median(raw) >= 0.5, getRepoColdHalfOfRaw: median(coldR) / median(raw) >= 0.5, getRepoColdHalfOfRawCpu: median(coldRCpu) / median(rawCpu) >= 0.5, getRepoColdHalfOfRawPooled: pooled(coldR) / pooled(raw) >= 0.5, getRepoColdHalfOfRawCpuPooled: pooled(coldRCpu) / pooled(rawCpu) >= 0.5, stream50kToOne: oneRate >= 50_000 },
      load: (await import('node:os')).loadavg(),
    }),
  );
} finally {
  client?.kill();
  await server.close();
  await pool.end();
  await db.drop();
  await rm(blobDir, { recursive: true, force: true });
}
