/**
 * How verify and a first import scale with the repo: for each size, a signed repo (generated once,
 * cached under the cache directory) is verified alone, streamed from its file, in a process of
 * its own (`bench/verify.ts --rss-only`), then verified and imported into an empty database in
 * another (`bench/import.ts --first-only`), so each peak RSS is that run's own. Prints one JSON
 * object last: per size, records/s and peak RSS (whole process, and above the process's baseline)
 * as multiples of the CAR.
 *
 *   node bench/growth.ts --database-url URL [--sizes 10000,100000] [--with-1m]
 *
 * The 1,000,000-record repo is left out unless `--with-1m` is given: building it with the
 * reference implementation takes about six minutes of CPU and 7 GB of memory (once; it is
 * cached), and its first import a few minutes.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { benchRepo } from './inputs.ts';

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

if (import.meta.main) {
  const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, sizes: { type: 'string', default: '10000,100000' }, 'with-1m': { type: 'boolean' } } });
  const url = values['database-url'] ?? process.env.DATABASE_URL;
  if (!url) throw new Error('bench/growth.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
  const sizes = values.sizes.split(',').map(Number);
  if (values['with-1m'] && !sizes.includes(1_000_000)) sizes.push(1_000_000);
  console.log(JSON.stringify({ bench: 'growth', rows: await benchGrowth({ databaseUrl: url, sizes }) }));
}
