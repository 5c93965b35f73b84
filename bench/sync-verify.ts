/**
 * The commit check alone (sync/verify-commit.ts's `checkCommitFrame`), inline on this thread, over
 * the sync bench's cached firehose: CPU µs per frame over `--runs` passes of the first `--frames`
 * commit frames (the signature included), the first two passes left out as warm-up. With
 * `--against DIR` (another checkout of repowalk, e.g. `git archive` of an older commit with
 * node_modules linked) its check runs too, pass for pass alternating with this one in the same
 * process, so that a loaded machine slows both alike.
 *
 * With `--pool N`, the consumer's decode-and-check path instead, without the store: each pass
 * takes the raw frames in batches of `--batch` as `sync/consumer.ts` does (decode every frame,
 * hand every commit to a `VerifyPool` of N threads, await them all in order) and reports CPU µs
 * per frame by thread: this one (`main`: the decode, the crossing to the threads and back), the
 * verify threads, and V8's helpers (GC, compiler), from /proc (10 ms ticks: keep passes long).
 *
 *   node bench/sync-verify.ts [--repos 200] [--commits 50] [--frames 3000] [--runs 12] [--against DIR]
 *   node bench/sync-verify.ts --pool 1 [--frames 10200] [--batch 500] [--runs 8] [--against DIR]
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { decodeFrame } from '../sync/frames.ts';
import { checkCommitFrame, type CommitFrame } from '../sync/verify-commit.ts';
import { generatedFirehose } from './sync-firehose.ts';
import { threadsCpu } from './thread-cpu.ts';

const { values } = parseArgs({
  options: {
    repos: { type: 'string', default: '200' },
    commits: { type: 'string', default: '50' },
    frames: { type: 'string' },
    runs: { type: 'string' },
    against: { type: 'string' },
    pool: { type: 'string' },
    batch: { type: 'string', default: '500' },
  },
});
const pooled = values.pool !== undefined;
const hose = await generatedFirehose(Number(values.repos), Number(values.commits), (l) => console.error(l));
const buf = readFileSync(hose.file);
const want = Number(values.frames ?? (pooled ? Infinity : 3000));
const raws: Uint8Array[] = [];
const frames: CommitFrame[] = [];
for (let o = 0; o < buf.length && raws.length < want; ) {
  const len = buf.readUInt32BE(o);
  const raw = new Uint8Array(buf.buffer, buf.byteOffset + o + 4, len);
  o += 4 + len;
  const f = decodeFrame(raw);
  if (f.t !== '#commit') continue;
  raws.push(raw);
  frames.push(f);
}
const runCount = Number(values.runs ?? (pooled ? 8 : 12));

type Pass = () => Promise<Record<string, number>>;
const passes: [string, Pass][] = [];
if (pooled) {
  passes.push(['this', await poolPass('..')]);
  if (values.against) passes.push(['against', await poolPass(resolve(values.against))]);
} else {
  type Check = (f: CommitFrame, key: string) => Promise<unknown>;
  const inline = (check: Check): Pass => async () => {
    const c0 = process.cpuUsage();
    for (const f of frames) await check(f, hose.signingKey);
    const c = process.cpuUsage(c0);
    return { total: (c.user + c.system) / frames.length };
  };
  passes.push(['this', inline(checkCommitFrame)]);
  if (values.against) {
    const other = (await import(pathToFileURL(resolve(values.against, 'sync/verify-commit.ts')).href)) as { checkCommitFrame: Check };
    passes.push(['against', inline(other.checkCommitFrame)]);
  }
}

const runs = new Map<string, Record<string, number>[]>(passes.map(([n]) => [n, []]));
// The verify threads are unref'd (a consumer's do not keep its process up): this keeps ours up.
const keepAlive = setInterval(() => {}, 1000);
for (let r = 0; r < runCount; r++) {
  for (const [name, pass] of r % 2 ? [...passes].reverse() : passes) runs.get(name)!.push(await pass());
}
const summary = (xs: Record<string, number>[]) =>
  Object.fromEntries(
    Object.keys(xs[0]!).map((k) => {
      const all = xs.map((x) => x[k]!);
      const s = all.slice(2).sort((a, b) => a - b);
      return [k, { min: round1(s[0]!), median: round1(s[Math.floor(s.length / 2)]!), all: all.map(round1) }];
    }),
  );
console.log(JSON.stringify({ frames: frames.length, ...(pooled ? { threads: Number(values.pool), batch: Number(values.batch) } : {}), cpuUsPerFrame: Object.fromEntries([...runs].map(([n, xs]) => [n, summary(xs)])) }));
clearInterval(keepAlive);
process.exit(0);

/** A pass of the consumer's decode and threaded check, with the modules of the tree at `root`. */
async function poolPass(root: string): Promise<Pass> {
  const url = (p: string) => (root === '..' ? new URL(`../${p}`, import.meta.url).href : pathToFileURL(resolve(root, p)).href);
  const { decodeFrame: decode } = (await import(url('sync/frames.ts'))) as typeof import('../sync/frames.ts');
  const { VerifyPool } = (await import(url('sync/verify-pool.ts'))) as typeof import('../sync/verify-pool.ts');
  const pool = new VerifyPool(Number(values.pool));
  const batch = Number(values.batch);
  return async () => {
    const t0 = threadsCpu();
    const m0 = process.threadCpuUsage();
    for (let i = 0; i < raws.length; i += batch) {
      const checks: Promise<unknown>[] = [];
      for (const raw of raws.slice(i, i + batch)) {
        const f = decode(raw);
        if (f.t === '#commit') checks.push(pool.verify(f, hose.signingKey));
      }
      for (const c of checks) await c;
    }
    const m = process.threadCpuUsage(m0);
    const t1 = threadsCpu();
    const per = (name: string) => ((t1.get(name) ?? 0) - (t0.get(name) ?? 0)) * 1000 / raws.length;
    const main = (m.user + m.system) / raws.length;
    return { main, verify: per('verify'), v8: per('V8Worker'), total: main + per('verify') + per('V8Worker') };
  };
}


function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
