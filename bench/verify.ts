/**
 * Verify alone, on a generated signed repo read from disk: `node bench/verify.ts [--records N]
 * [--runs R] [--rss-only]` (defaults 100,000 and 5; `--rss-only` measures one verify's time and
 * peak RSS, nothing else, for the growth bench).
 *
 * Reports records/s and MB/s of `verifyRepo` (whole CAR in memory, and streamed from the file),
 * the floor — CAR framing + SHA-256 + DAG-CBOR decode of every block, with the fastest
 * primitives at hand — and the ratio of verify to it, the ratio to `@atproto/repo`'s
 * `verifyRepoCar` on the same CAR, and the peak RSS of a process that reads the CAR and verifies
 * it once. Each measurement runs in its own child process, so that one's heap and peak RSS do
 * not leak into another's. The last line of output is one JSON object for a bench runner.
 *
 * Also `verifyRepo` with `deferBlockHashes` (what an importer of one large repo waits for before
 * its database work starts; the hashes are checked after it, here at once, timed apart).
 *
 * Goals (issue 3): verify ≥ 0.6 of the floor; peak RSS under 3× the CAR size.
 */
import { fork } from 'node:child_process';
import { hash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { verifyRepo, verifyRepoStream } from '../atproto/verify.ts';
// Everything else is imported where a phase needs it, so that a child measuring our verify's
// RSS has not loaded @atproto/repo and the repo generator.

type Phase = 'floor' | 'verify' | 'verify-deferred' | 'verify-stream' | 'verify-rss' | 'reference';

interface Job {
  phase: Phase;
  carPath: string;
  did: string;
  signingKey: string;
  runs: number;
}

interface Timing {
  /** Milliseconds per run, best and median. */
  bestMs: number;
  medianMs: number;
  /** CPU milliseconds of the process per run, best and median. */
  cpuBestMs: number;
  cpuMedianMs: number;
  records: number;
  blocks: number;
  /** Peak RSS of the process, bytes. */
  maxRss: number;
  /** RSS after imports, before the CAR was read, bytes. */
  baseRss: number;
  /** `verify-deferred`: milliseconds of the hash check left after verify returned, best and median. */
  checkBestMs?: number;
  checkMedianMs?: number;
}

const MB = 1024 * 1024;

async function child(job: Job): Promise<Timing> {
  const baseRss = process.memoryUsage().rss;
  const times: number[] = [];
  let records = 0;
  let blocks = 0;
  const checkTimes: number[] = [];
  // CPU of this process per run too: on a loaded machine wall time says little.
  const cpuTimes: number[] = [];
  const cpuNow = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const time = async (run: () => Promise<void> | void) => {
    for (let i = 0; i < job.runs; i++) {
      const start = performance.now();
      const cpu = cpuNow();
      await run();
      times.push(performance.now() - start);
      cpuTimes.push(cpuNow() - cpu);
    }
  };
  // A Buffer is a Uint8Array already; `new Uint8Array(buffer)` would copy it.
  const car = job.phase === 'verify-stream' ? undefined : readFileSync(job.carPath);
  const options = { did: job.did, signingKey: job.signingKey, caps: { maxBytes: 1024 * MB } };
  switch (job.phase) {
    case 'floor': {
      const CAR = await import('@atcute/car');
      const CBOR = await import('@atcute/cbor');
      await time(() => {
        let n = 0;
        for (const entry of CAR.fromUint8Array(car!)) {
          hash('sha256', entry.bytes, 'binary'); // the fastest digest form, as verify uses
          CBOR.decode(entry.bytes);
          n++;
        }
        blocks = n;
      });
      break;
    }
    case 'verify':
    case 'verify-rss':
      await time(async () => {
        const repo = await verifyRepo(car!, options);
        records = repo.recordList!.length;
        blocks = repo.blocks.size;
      });
      break;
    case 'verify-deferred':
      for (let i = 0; i < job.runs; i++) {
        const start = performance.now();
        const cpu = cpuNow();
        const repo = await verifyRepo(car!, { ...options, deferBlockHashes: true });
        times.push(performance.now() - start);
        cpuTimes.push(cpuNow() - cpu);
        const checking = performance.now();
        await repo.blocksChecked;
        checkTimes.push(performance.now() - checking);
        records = repo.recordList!.length;
        blocks = repo.blocks.size;
      }
      break;
    case 'verify-stream':
      await time(async () => {
        const repo = await verifyRepoStream(createReadStream(job.carPath, { highWaterMark: 64 * 1024 }), options);
        records = repo.recordList!.length;
        blocks = repo.blocks.size;
      });
      break;
    case 'reference': {
      const { verifyRepoCar } = await import('@atproto/repo');
      await time(async () => {
        const repo = await verifyRepoCar(car!, job.did, job.signingKey);
        records = repo.creates.length;
      });
      break;
    }
  }
  const sorted = [...times].sort((a, b) => a - b);
  const checks = [...checkTimes].sort((a, b) => a - b);
  const cpus = [...cpuTimes].sort((a, b) => a - b);
  return {
    bestMs: sorted[0]!,
    medianMs: sorted[sorted.length >> 1]!,
    cpuBestMs: cpus[0]!,
    cpuMedianMs: cpus[cpus.length >> 1]!,
    ...(checks.length > 0 ? { checkBestMs: checks[0]!, checkMedianMs: checks[checks.length >> 1]! } : {}),
    records,
    blocks,
    maxRss: process.resourceUsage().maxRSS * 1024,
    baseRss,
  };
}

function runChild(job: Job): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const proc = fork(process.argv[1]!, ['--child', JSON.stringify(job)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    proc.once('message', (m) => resolve(m as Timing));
    proc.once('error', reject);
    proc.once('exit', (code) => code !== 0 && reject(new Error(`${job.phase} child exited with ${code}`)));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { records: { type: 'string', default: '100000' }, runs: { type: 'string', default: '5' }, child: { type: 'string' }, 'rss-only': { type: 'boolean' } },
  });
  if (values.child !== undefined) {
    const result = await child(JSON.parse(values.child) as Job);
    process.send!(result, () => process.exit(0));
    return;
  }
  const recordCount = Number(values.records);
  const runs = Number(values.runs);
  const started = performance.now();
  const { cachePaths } = await import('../atproto/testing/make-repo.ts');
  const { BENCH_DID, benchRepo } = await import('./inputs.ts');
  const repo = await benchRepo(recordCount);
  const { carPath } = cachePaths({ did: BENCH_DID, records: recordCount });
  const carBytes = repo.car.length;
  console.log(`repo: ${recordCount} records, ${(carBytes / MB).toFixed(1)} MB CAR (${carPath}, ready in ${((performance.now() - started) / 1000).toFixed(1)} s)`);

  const base = { carPath, did: repo.did, signingKey: repo.signingKey };
  if (values['rss-only']) {
    const once = await runChild({ ...base, phase: 'verify-stream', runs: 1 });
    console.log(
      JSON.stringify({
        bench: 'verify-rss',
        records: recordCount,
        carBytes,
        verifyStreamMs: once.bestMs,
        recordsPerSec: Math.round((recordCount / once.bestMs) * 1000),
        peakRssBytes: once.maxRss,
        baseRssBytes: once.baseRss,
        peakRssToCar: Number((once.maxRss / carBytes).toFixed(2)),
        aboveBaseToCar: Number(((once.maxRss - once.baseRss) / carBytes).toFixed(2)),
      }),
    );
    return;
  }
  // Interleaved, so a noisy neighbour on the machine hurts both sides alike.
  const floor = await runChild({ ...base, phase: 'floor', runs });
  const ours = await runChild({ ...base, phase: 'verify', runs });
  const deferred1 = await runChild({ ...base, phase: 'verify-deferred', runs });
  const floor2 = await runChild({ ...base, phase: 'floor', runs });
  const ours2 = await runChild({ ...base, phase: 'verify', runs });
  const deferred2 = await runChild({ ...base, phase: 'verify-deferred', runs });
  const deferred = deferred2.cpuBestMs < deferred1.cpuBestMs ? deferred2 : deferred1;
  const stream = await runChild({ ...base, phase: 'verify-stream', runs });
  const rss = await runChild({ ...base, phase: 'verify-rss', runs: 1 });
  const reference = await runChild({ ...base, phase: 'reference', runs: Math.min(runs, 2) });

  const floorMs = Math.min(floor.bestMs, floor2.bestMs);
  const oursMs = Math.min(ours.bestMs, ours2.bestMs);
  const oursMedianMs = Math.min(ours.medianMs, ours2.medianMs);
  const floorMedianMs = Math.min(floor.medianMs, floor2.medianMs);
  const perSecond = (n: number, ms: number) => (n / ms) * 1000;
  const mbPerSecond = (ms: number) => carBytes / MB / (ms / 1000);
  const line = (name: string, ms: number, median: number, extra = '', t?: Timing) =>
    console.log(
      `${name.padEnd(30)} ${ms.toFixed(0).padStart(6)} ms (median ${median.toFixed(0).padStart(6)}${t ? `; CPU ${t.cpuBestMs.toFixed(0)}, median ${t.cpuMedianMs.toFixed(0)}` : ''})  ` +
        `${(perSecond(recordCount, ms) / 1000).toFixed(0).padStart(5)}k records/s  ${mbPerSecond(ms).toFixed(1).padStart(6)} MB/s${extra}`,
    );
  console.log(`best of ${runs} runs (medians beside), ${ours.blocks} blocks`);
  line('floor (frame+sha256+decode)', floorMs, floorMedianMs, `  ${(perSecond(floor.blocks, floorMs) / 1000).toFixed(0)}k blocks/s`);
  line('verifyRepo (bytes)', oursMs, oursMedianMs, '', ours2.cpuBestMs < ours.cpuBestMs ? ours2 : ours);
  line('verifyRepo, hashes deferred', deferred.bestMs, deferred.medianMs, `  (then the hash check: ${deferred.checkBestMs!.toFixed(0)} ms, median ${deferred.checkMedianMs!.toFixed(0)})`, deferred);
  line('verifyRepoStream (file, 64 KB)', stream.bestMs, stream.medianMs);
  line('@atproto/repo verifyRepoCar', reference.bestMs, reference.medianMs);
  const ratioToFloor = floorMs / oursMs;
  const ratioToReference = reference.bestMs / oursMs;
  const rssRatio = rss.maxRss / carBytes;
  console.log(`verify / floor: ${ratioToFloor.toFixed(2)} (goal ≥ 0.6; median ${(floorMedianMs / oursMedianMs).toFixed(2)})`);
  console.log(`verify / @atproto/repo: ${ratioToReference.toFixed(1)}× faster`);
  console.log(
    `peak RSS, read + verify once: ${(rss.maxRss / MB).toFixed(0)} MB = ${rssRatio.toFixed(2)}× the CAR (goal < 3×); ` +
      `${(rss.baseRss / MB).toFixed(0)} MB of it is Node and the modules before the CAR is read, ` +
      `so verify's own peak is ${((rss.maxRss - rss.baseRss) / carBytes).toFixed(2)}× the CAR`,
  );
  console.log(`@atproto/repo verifyRepoCar peak RSS: ${(reference.maxRss / MB).toFixed(0)} MB`);
  console.log(
    'note: verify hashes every block but decodes only the commit and MST nodes (records are checked by hash, ' +
      'not parsed), which is why it can beat a floor that decodes every block.',
  );
  console.log(
    JSON.stringify({
      bench: 'verify',
      records: recordCount,
      blocks: ours.blocks,
      carBytes,
      verifyMs: oursMs,
      verifyRecordsPerSec: Math.round(perSecond(recordCount, oursMs)),
      verifyMBPerSec: Number(mbPerSecond(oursMs).toFixed(1)),
      verifyCpuMs: Math.min(ours.cpuBestMs, ours2.cpuBestMs),
      verifyDeferredMs: deferred.bestMs,
      verifyDeferredCpuMs: deferred.cpuBestMs,
      verifyDeferredCheckMs: deferred.checkBestMs,
      verifyStreamMs: stream.bestMs,
      floorMs,
      floorBlocksPerSec: Math.round(perSecond(floor.blocks, floorMs)),
      ratioToFloor: Number(ratioToFloor.toFixed(3)),
      referenceMs: reference.bestMs,
      ratioToReference: Number(ratioToReference.toFixed(2)),
      peakRssBytes: rss.maxRss,
      baseRssBytes: rss.baseRss,
      peakRssToCar: Number(rssRatio.toFixed(2)),
      streamPeakRssBytes: stream.maxRss,
      streamPeakRssToCar: Number((stream.maxRss / carBytes).toFixed(2)),
      referencePeakRssBytes: reference.maxRss,
      goals: { ratioToFloor: ratioToFloor >= 0.6, peakRss: rssRatio < 3 },
    }),
  );
}

await main();
