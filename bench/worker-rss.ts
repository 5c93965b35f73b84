/**
 * `repowalk worker` at rest: starts the worker (every job, or `--job NAME`) through the
 * `repowalk` launcher, as an operator does, against a running stack, waits until it says it is
 * running, lets it settle, and reports its resident memory and how long it took to become ready
 * (5 s and 30 s after it said so: V8 gives back the start's young generation and the SDK's
 * debugging copy of the bundle only after a while) — twice, so the second start shows a cached
 * workflow bundle and JavaScript tree (the first may have built them). Prints one JSON object last.
 *
 *   node bench/worker-rss.ts --temporal HOST:PORT --database-url URL [--job NAME]... [--from-source]
 *
 * `--from-source` runs the TypeScript sources directly (REPOWALK_FROM_SOURCE=1), for comparison.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const REPOWALK = fileURLToPath(new URL('../repowalk', import.meta.url));

interface AtRest {
  readyMs: number;
  /** Resident memory `settleMs` after the worker said it was running. */
  rssMB: number;
  /** ... and 5 s after: the SDK still holds a copy of the workflow bundle, run in a context of the main thread, for its first 10 s. */
  rssAt5sMB: number;
}

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

function startOnce(args: { temporal: string; databaseUrl: string; jobs: string[]; stateDir: string; settleMs: number; fromSource: boolean }): Promise<AtRest> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    // The launcher execs node: the child's pid is the worker's.
    const child = spawn(REPOWALK, ['worker', ...args.jobs.flatMap((j) => ['--job', j])], {
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: args.temporal,
        DATABASE_URL: args.databaseUrl,
        REPOWALK_STATE_DIR: args.stateDir,
        REPOWALK_BLOBSTORE: 'local',
        REPOWALK_BLOB_DIR: join(args.stateDir, 'blobs'),
        REPOWALK_LOG_LEVEL: 'warn',
        REPOWALK_FROM_SOURCE: args.fromSource ? '1' : '0',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let result: AtRest | undefined;
    child.stdout.on('data', (d) => {
      out += d;
      if (result === undefined && out.includes('worker running jobs')) {
        const readyMs = performance.now() - started;
        result = { readyMs, rssMB: 0, rssAt5sMB: 0 };
        setTimeout(() => (result!.rssAt5sMB = Math.round(rssOf(child.pid!))), 5000);
        setTimeout(() => {
          result!.rssMB = Math.round(rssOf(child.pid!));
          child.kill('SIGINT');
        }, args.settleMs);
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => (result && result.rssMB > 0 ? resolve(result) : reject(new Error(`worker exited ${code} before it was at rest: ${out.slice(-500)}`))));
  });
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { temporal: { type: 'string' }, 'database-url': { type: 'string' }, job: { type: 'string', multiple: true }, 'from-source': { type: 'boolean' } } });
  if (!values.temporal || !values['database-url']) throw new Error('bench/worker-rss.ts needs --temporal and --database-url (bench/run.ts passes its stack\'s)');
  const stateDir = mkdtempSync(join(tmpdir(), 'repowalk-worker-rss-'));
  try {
    const fromSource = values['from-source'] ?? false;
    const opts = { temporal: values.temporal, databaseUrl: values['database-url'], jobs: values.job ?? [], stateDir, settleMs: 30_000, fromSource };
    const first = await startOnce(opts);
    console.error(`worker-rss: first start ready in ${(first.readyMs / 1000).toFixed(1)} s, ${first.rssAt5sMB} MB 5 s after, ${first.rssMB} MB at rest (30 s after)`);
    const cached = await startOnce(opts);
    console.error(`worker-rss: second start ready in ${(cached.readyMs / 1000).toFixed(1)} s, ${cached.rssAt5sMB} MB 5 s after, ${cached.rssMB} MB at rest (30 s after)`);
    console.log(JSON.stringify({ bench: 'worker-rss', jobs: opts.jobs.length > 0 ? opts.jobs : 'all', from: fromSource ? 'source' : 'javascript', first, cached, goal: { rssMB: 150, met: cached.rssMB <= 150 } }));
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
}
