/**
 * How the mirror's costs grow (issue 13), in two parts.
 *
 * Mirrors along two axes (`bench/growth-mirror.ts`): records in one repo (`--mirror-records`,
 * 10,000 and 100,000; `--with-1m` adds 1,000,000) and repos of `--small-records` (10) records
 * each (`--mirror-repos`, 10, 1,000 and 10,000; `--with-100k-repos` adds 100,000). Each mirror
 * is built in a fresh database and directory blobstore by the store path (verify + `storeBatch`,
 * 250 repos a batch), then walked (validate, scrub), then garbage-collected, each step in a
 * process of its own so its peak RSS is its own. Per mirror: import records/s and repos/s, walk
 * nodes/s and CPU per node (process + PostgreSQL), GC time, peak RSS; per axis a flatness figure
 * (largest ÷ smallest, `bench/growth-flatness.ts`). A table goes to stderr.
 *
 * Single repos (`--sizes`, skipped with `--no-single`): for each size, a signed repo (generated once,
 * cached under the cache directory) is verified alone, streamed from its file, in a process of
 * its own (`bench/verify.ts --rss-only`), then verified (streamed from its file too, so the CAR's
 * own bytes count) and imported into an empty database in another (`bench/import.ts
 * --first-only`, whose baseline is its RSS just before the import), so each peak RSS is that
 * run's own. Prints one JSON object last: per size, records/s and peak RSS (whole process, and
 * above the process's baseline) as multiples of the CAR.
 *
 *   node bench/growth.ts --database-url URL [--sizes 10000,100000] [--no-single] [--with-1m]
 *     [--mirror-records 10000,100000] [--mirror-repos 10,1000,10000] [--small-records 10]
 *     [--with-100k-repos] [--no-mirrors]
 *
 * The 1,000,000-record repo is left out unless `--with-1m` is given: building it with the
 * reference implementation takes about six minutes of CPU and 7 GB of memory (once; it is
 * cached), and its first import a few minutes.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { benchRepo } from './inputs.ts';
import { type AxisPoint, flatness } from './growth-flatness.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));

function runJson(script: string, args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', join(HERE, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} ${args.join(' ')} exited ${code}`));
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last) as Record<string, unknown>);
      } catch {
        reject(new Error(`${script} printed no JSON line last: ${last.slice(-200)}`));
      }
    });
  });
}

export interface GrowthRow {
  records: number;
  carMB: number;
  verify: { recordsPerSec: number; peakRssMB: number; peakRssToCar: number; aboveBaseToCar: number };
  firstImport: {
    recordsPerSec: number;
    peakRssMB: number;
    peakRssToCar: number;
    aboveBaseToCar: number;
    msByStep: Record<string, number>;
    /** CPU of the import process and of its PostgreSQL backend (bench/import.ts). */
    cpuSeconds: { worker: number; postgres: number | null };
  };
}

export async function benchGrowth(opts: { databaseUrl: string; sizes: number[]; log?: (l: string) => void }): Promise<GrowthRow[]> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const rows: GrowthRow[] = [];
  for (const records of opts.sizes) {
    log(`growth: ${records} records: preparing the repo (cached after the first run)`);
    const made = await benchRepo(records);
    const carBytes = made.car.length;
    const verify = await runJson('verify.ts', ['--records', String(records), '--rss-only']);
    log(`growth: ${records} records: verify ${verify.recordsPerSec} records/s, peak ${verify.peakRssToCar}× the CAR`);
    const imp = await runJson('import.ts', ['--records', String(records), '--database-url', opts.databaseUrl, '--first-only']);
    const first = imp.firstImport as { recordsPerSecond: number; msByStep: Record<string, number>; cpuSeconds: { worker: number; postgres: number | null } };
    const row: GrowthRow = {
      records,
      carMB: round(carBytes / 1e6, 1),
      verify: {
        recordsPerSec: verify.recordsPerSec as number,
        peakRssMB: round((verify.peakRssBytes as number) / 2 ** 20, 0),
        peakRssToCar: verify.peakRssToCar as number,
        aboveBaseToCar: verify.aboveBaseToCar as number,
      },
      firstImport: {
        recordsPerSec: Math.round(first.recordsPerSecond),
        peakRssMB: round(imp.peakRssMb as number, 0),
        peakRssToCar: round(imp.peakRssOverCar as number, 2),
        aboveBaseToCar: round(imp.aboveBaselineOverCar as number, 2),
        msByStep: first.msByStep,
        cpuSeconds: first.cpuSeconds,
      },
    };
    log(`growth: ${records} records: first import ${row.firstImport.recordsPerSec} records/s, ${row.firstImport.aboveBaseToCar}× the CAR above baseline`);
    rows.push(row);
  }
  return rows;
}

function round(n: number, digits: number): number {
  return Number(n.toFixed(digits));
}

export interface MirrorRow {
  axis: 'records' | 'repos';
  repos: number;
  records: number;
  build: Record<string, unknown> & { recordsPerSecond: number; reposPerSecond: number; peakRssMB: number; blocks: number };
  walk: { validate: WalkRow; scrub: WalkRow; peakRssMB: number };
  gc: Record<string, unknown> & { seconds: number; nodesPerSecond: number; cpuMicrosecondsPerNode: { process: number; postgres: number }; peakRssMB: number };
  loadAverage: number[];
}
type WalkRow = { nodes: number; nodesPerSecond: number; cpuMicrosecondsPerNode: number; mainThreadCpuMicrosecondsPerNode: number; postgresCpuMicrosecondsPerNode: number; rssPeakBytes: number };

/** Builds, walks and garbage-collects one mirror, each step in a process of its own; drops it after. */
export async function benchMirror(opts: { databaseUrl: string; axis: 'records' | 'repos'; repos: number; records: number; log: (l: string) => void }): Promise<MirrorRow> {
  const { repos, records, log } = opts;
  const database = `growth_${repos}x${records}_${Date.now().toString(36)}`;
  const blobs = await mkdtemp(join(tmpdir(), 'repowalk-growth-'));
  const common = ['--admin-url', opts.databaseUrl, '--database', database, '--blobs', blobs, '--repos', String(repos), '--records', String(records)];
  const total = repos * records;
  try {
    log(`growth: mirror ${repos} × ${records}: building`);
    const build = (await runJson('growth-mirror.ts', ['--step', 'build', ...common])) as MirrorRow['build'];
    log(`growth: mirror ${repos} × ${records}: ${build.recordsPerSecond} records/s, ${build.reposPerSecond} repos/s; walking`);
    // Small mirrors are walked several times (the median reported), enough for the walks to pass
    // ~400,000 nodes together (a walk is ~3.5 nodes a record), at least three and at most twelve:
    // V8 compiles the hot paths over the first few hundred thousand nodes, and 1,000 small repos
    // (35,000 nodes) walked three times were still being compiled: CPU per node 20.7 µs, 8.6 of it
    // V8's helper threads (about 5 the compiler's: 1.1 with --no-concurrent-recompilation), against
    // 14.8 and 3.4 over twelve walks. A large mirror is walked once, without the warm-up walk.
    const walkArgs = total <= 200_000 ? ['--repeat', String(Math.min(12, Math.max(3, Math.ceil(400_000 / (total * 3.5)))))] : ['--repeat', '1', '--no-warmup'];
    const walk = (await runJson('growth-mirror.ts', ['--step', 'walk', ...common, ...walkArgs])) as unknown as MirrorRow['walk'];
    log(`growth: mirror ${repos} × ${records}: validate ${walk.validate.nodesPerSecond} nodes/s, scrub ${walk.scrub.nodesPerSecond}; collecting garbage`);
    const gc = (await runJson('growth-mirror.ts', ['--step', 'gc', ...common])) as MirrorRow['gc'];
    return { axis: opts.axis, repos, records, build, walk, gc, loadAverage: loadavg().map((x) => round(x, 1)) };
  } finally {
    const pg = (await import('pg')).default;
    const admin = new pg.Client({ connectionString: opts.databaseUrl });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database}`);
    await admin.end();
    await rm(blobs, { recursive: true, force: true });
  }
}

/** Per axis: largest ÷ smallest of the rates and CPU per node (`growth-flatness.ts`). */
export function mirrorFlatness(rows: MirrorRow[]): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const axis of ['records', 'repos'] as const) {
    const points: AxisPoint[] = rows
      .filter((r) => r.axis === axis)
      .map((r) => ({
        size: axis === 'records' ? r.records * r.repos : r.repos,
        figures: {
          importRecordsPerSecond: r.build.recordsPerSecond,
          importCpuPerRecord: cpuSum(r.build.cpuMicrosecondsPerRecord as { process: number; postgres: number }),
          validateNodesPerSecond: r.walk.validate.nodesPerSecond,
          validateCpuPerNode: r.walk.validate.cpuMicrosecondsPerNode + r.walk.validate.postgresCpuMicrosecondsPerNode,
          scrubNodesPerSecond: r.walk.scrub.nodesPerSecond,
          scrubCpuPerNode: r.walk.scrub.cpuMicrosecondsPerNode + r.walk.scrub.postgresCpuMicrosecondsPerNode,
          gcNodesPerSecond: r.gc.nodesPerSecond,
          gcCpuPerNode: cpuSum(r.gc.cpuMicrosecondsPerNode),
        },
      }));
    const f = flatness(points);
    if (Object.keys(f).length) out[axis] = f;
  }
  return out;
}

const cpuSum = (c: { process: number; postgres: number }) => round(c.process + c.postgres, 2);

/** The mirrors as a table, one line each: rates, then CPU per node as process + PostgreSQL (µs). */
export function mirrorTable(rows: MirrorRow[]): string {
  const head = ['mirror', 'import rec/s', 'repos/s', 'µs/rec', 'RSS', 'validate n/s', 'µs/node', 'scrub n/s', 'µs/node', 'walk RSS', 'GC s', 'GC µs/node', 'GC RSS'];
  const lines = rows.map((r) => {
    const v = r.walk.validate;
    const s = r.walk.scrub;
    const rec = r.build.cpuMicrosecondsPerRecord as { process: number; postgres: number };
    return [
      `${r.repos.toLocaleString('en-US')} × ${r.records.toLocaleString('en-US')}`,
      r.build.recordsPerSecond.toLocaleString('en-US'),
      r.build.reposPerSecond.toLocaleString('en-US'),
      `${rec.process}+${rec.postgres}`,
      `${r.build.peakRssMB}`,
      v.nodesPerSecond.toLocaleString('en-US'),
      `${v.cpuMicrosecondsPerNode}+${v.postgresCpuMicrosecondsPerNode}`,
      s.nodesPerSecond.toLocaleString('en-US'),
      `${s.cpuMicrosecondsPerNode}+${s.postgresCpuMicrosecondsPerNode}`,
      `${r.walk.peakRssMB}`,
      `${r.gc.seconds}`,
      `${r.gc.cpuMicrosecondsPerNode.process}+${r.gc.cpuMicrosecondsPerNode.postgres}`,
      `${r.gc.peakRssMB}`,
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  return [head, ...lines].map((l) => l.map((c, i) => c.padStart(widths[i]!)).join('  ')).join('\n');
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      'database-url': { type: 'string' },
      sizes: { type: 'string', default: '10000,100000' },
      'with-1m': { type: 'boolean' },
      'no-single': { type: 'boolean' },
      'no-mirrors': { type: 'boolean' },
      'mirror-records': { type: 'string', default: '10000,100000' },
      'mirror-repos': { type: 'string', default: '10,1000,10000' },
      'small-records': { type: 'string', default: '10' },
      'with-100k-repos': { type: 'boolean' },
    },
  });
  const url = values['database-url'] ?? process.env.DATABASE_URL;
  if (!url) throw new Error('bench/growth.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
  const list = (s: string) => s.split(',').filter((x) => x !== '').map(Number);
  const sizes = list(values.sizes);
  if (values['with-1m'] && !sizes.includes(1_000_000)) sizes.push(1_000_000);
  const out: Record<string, unknown> = { bench: 'growth', loadAverageAtStart: loadavg().map((x) => round(x, 1)) };
  if (!values['no-single']) out.rows = await benchGrowth({ databaseUrl: url, sizes });
  if (!values['no-mirrors']) {
    const log = (l: string) => console.error(l);
    const byRecords = list(values['mirror-records']);
    if (values['with-1m'] && !byRecords.includes(1_000_000)) byRecords.push(1_000_000);
    const byRepos = list(values['mirror-repos']);
    if (values['with-100k-repos'] && !byRepos.includes(100_000)) byRepos.push(100_000);
    const small = Number(values['small-records']);
    const rows: MirrorRow[] = [];
    for (const records of byRecords) rows.push(await benchMirror({ databaseUrl: url, axis: 'records', repos: 1, records, log }));
    for (const repos of byRepos) rows.push(await benchMirror({ databaseUrl: url, axis: 'repos', repos, records: small, log }));
    console.error(`growth: mirrors (CPU per record or node in µs, this process + PostgreSQL; RSS in MB, each step's process)\n${mirrorTable(rows)}`);
    out.mirrors = rows;
    out.flatness = mirrorFlatness(rows);
    console.error(`growth: flatness, largest ÷ smallest: ${JSON.stringify(out.flatness)}`);
  }
  out.loadAverageAtEnd = loadavg().map((x) => round(x, 1));
  console.log(JSON.stringify(out));
}
