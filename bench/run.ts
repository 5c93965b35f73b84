/**
 * `npm run bench`: starts a scratch stack (Temporal dev server, PostgreSQL, S3) and runs every
 * benchmark, each in its own process so that peak RSS is its own. Prints a table and, last, one
 * JSON object with every figure (also written to bench-results.json).
 *
 *   npm run bench [-- --only verify,import,e2e,walk,serve,sync,scale] [--records 100000] [--repos 2000] [--workers N]
 *   npm run bench -- --only sync [--sync-quick | --sync-repos 2000 --sync-commits 100]   (bench/sync.ts: a replayed firehose)
 *   npm run bench -- --only growth [--growth-sizes 10000,100000] [--with-1m]   (bench/growth.ts)
 *     [--growth-mirror-records 10000,100000] [--growth-mirror-repos 10,1000,10000] [--with-100k-repos]
 *   npm run bench -- --only worker-rss   (bench/worker-rss.ts: `repowalk worker` at rest)
 *   npm run bench -- --only e2e-large [--records 100000]   (one large repo through Temporal)
 *
 * `sync`, `scale`, `growth`, `worker-rss` and `e2e-large` are not in the default set; `scale` prints the
 * per-unit costs and the projection of docs/SCALE.md.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../config/load.ts';
import { startStack } from '../stack/stack.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * The node flags every repowalk process runs with (scripts/env.sh sets them, and ./repowalk passes
 * them): each bench runs with them too, so that it measures what a worker does. `npm run bench`
 * sources scripts/env.sh; run directly without it, the benches get none, as `results.nodeFlags` says.
 */
const NODE_FLAGS = (process.env.REPOWALK_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
/** The flags of a worker whose every job is walk or maintenance (`repowalk worker --job walk`): the walk bench's. */
const WALK_NODE_FLAGS = (process.env.REPOWALK_WALK_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);

/** Runs `node <flags> <script> …args` and returns the JSON object that ends its stdout (one line or pretty-printed). */
function runJson(script: string, args: string[], env: Record<string, string> = {}, flags: string[] = NODE_FLAGS): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...flags, join(HERE, script), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} exited ${code}`));
      const text = out.trim();
      // The object starts at the last line that opens one: a one-line result, or a pretty one.
      for (let at = text.lastIndexOf('{'); at >= 0; at = text.lastIndexOf('{', at - 1)) {
        if (at > 0 && text[at - 1] !== '\n') continue;
        try {
          return resolve(JSON.parse(text.slice(at)));
        } catch {
          // an inner line of a pretty object: keep looking further up
        }
      }
      reject(new Error(`${script} printed no JSON object last: ${text.slice(-200)}`));
    });
  });
}

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    records: { type: 'string', default: '100000' },
    repos: { type: 'string', default: '2000' },
    workers: { type: 'string', default: '1' },
    'growth-sizes': { type: 'string', default: '10000,100000' },
    'with-1m': { type: 'boolean' },
    'sync-repos': { type: 'string' },
    'sync-commits': { type: 'string' },
    'sync-quick': { type: 'boolean' },
    'growth-mirror-records': { type: 'string', default: '10000,100000' },
    'growth-mirror-repos': { type: 'string', default: '10,1000,10000' },
    'with-100k-repos': { type: 'boolean' },
  },
});
const only = new Set((values.only ?? 'verify,import,e2e,walk,serve').split(','));
const config = loadConfig();
const stateDir = await mkdtemp(join(tmpdir(), 'repowalk-bench-'));
await chmod(stateDir, 0o755);
console.error(`bench: starting a scratch stack in ${stateDir}`);
const stack = await startStack({
  stateDir,
  cacheDir: config.cacheDir,
  temporal: { port: 0, uiPort: 0, ui: false, namespace: 'default' },
  postgres: { port: 0 },
  s3: { enabled: true, port: 0, buckets: ['bench-a', 'bench-b'], region: 'us-east-1' },
  log: (l) => console.error(`bench: ${l}`),
});
const results: Record<string, unknown> = {
  machine: { cores: (await import('node:os')).availableParallelism(), node: process.version },
  nodeFlags: NODE_FLAGS,
  walkNodeFlags: WALK_NODE_FLAGS,
  mallocArenaMax: process.env.MALLOC_ARENA_MAX ?? null,
};
const dbUrl = stack.info.postgres.url.replace(/\/repowalk$/, '/postgres');
try {
  if (only.has('verify')) results.verify = await runJson('verify.ts', []);
  if (only.has('import')) results.import = await runJson('import.ts', ['--records', values.records, '--database-url', dbUrl]);
  if (only.has('worker-rss')) {
    results.workerRss = await runJson('worker-rss.ts', ['--temporal', stack.info.temporal.address, '--database-url', stack.info.postgres.url]);
  }
  if (only.has('growth')) {
    results.growth = await runJson('growth.ts', [
      '--database-url', dbUrl, '--sizes', values['growth-sizes'], ...(values['with-1m'] ? ['--with-1m'] : []),
      '--mirror-records', values['growth-mirror-records'], '--mirror-repos', values['growth-mirror-repos'], ...(values['with-100k-repos'] ? ['--with-100k-repos'] : []),
    ]);
  }
  if (only.has('e2e')) {
    // Each repo signed with a key of its own, as on the network (a key met for the first time
    // costs more than one seen before).
    results.e2e = await runJson('e2e-main.ts', ['--repos', values.repos, '--temporal', stack.info.temporal.address, '--database-url', dbUrl, '--workers', values.workers, '--key-per-repo']);
  }
  // One repo of `--records` records (100,000 by default) backfilled through Temporal, from the
  // static PDS over loopback HTTP: the first import's bench (`import`) with the worker, the
  // workflow, the PDS's HTTP and the CAR's transfer around it. One warm-up pass, so that the
  // figure is a warm worker's, as in `e2e`.
  if (only.has('e2e-large')) {
    results.e2eLarge = await runJson('e2e-main.ts', ['--repos', '1', '--records', values.records, '--warmup', '1', '--temporal', stack.info.temporal.address, '--database-url', dbUrl, '--workers', values.workers]);
  }
  // Per-unit costs for docs/SCALE.md: several worker processes, packs to the stack's S3.
  if (only.has('scale')) {
    const s3 = stack.info.s3!;
    const s3Arg = JSON.stringify({ endpoint: s3.endpoint, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, buckets: s3.buckets });
    results.scale = await runJson('scale.ts', ['--temporal', stack.info.temporal.address, '--database-url', dbUrl, '--s3', s3Arg, '--workers', values.workers]);
  }
  if (only.has('sync')) results.sync = await runJson('sync.ts', [
      '--database-url', dbUrl,
      ...(values['sync-quick'] ? ['--quick'] : []),
      ...(values['sync-repos'] ? ['--repos', values['sync-repos']] : []),
      ...(values['sync-commits'] ? ['--commits', values['sync-commits']] : []),
    ]);
  // bench/walk.ts starts its own PostgreSQL and S3 (it builds a mirror of its own).
  if (only.has('walk')) results.walk = await runJson('walk.ts', [], {}, WALK_NODE_FLAGS);
  if (only.has('serve')) results.serve = await runJson('serve.ts', ['--records', values.records, '--database-url', dbUrl]);
} finally {
  await stack.stop();
  await rm(stateDir, { recursive: true, force: true });
}
await writeFile('bench-results.json', JSON.stringify(results, null, 2));
console.log(JSON.stringify(results));
