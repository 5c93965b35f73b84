/**
 * The commit check alone (sync/verify-commit.ts's `checkCommitFrame`), inline on this thread, over
 * the sync bench's cached firehose: CPU µs per frame over `--runs` passes of the first `--frames`
 * commit frames (the signature included), the first two passes left out as warm-up. With
 * `--against DIR` (another checkout of repowalk, e.g. `git archive` of an older commit with
 * node_modules linked) its check runs too, pass for pass alternating with this one in the same
 * process, so that a loaded machine slows both alike.
 *
 *   node bench/sync-verify.ts [--repos 200] [--commits 50] [--frames 3000] [--runs 12] [--against DIR]
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { decodeFrame } from '../sync/frames.ts';
import { checkCommitFrame, type CommitFrame } from '../sync/verify-commit.ts';
import { generatedFirehose } from './sync-firehose.ts';

const { values } = parseArgs({
  options: { repos: { type: 'string', default: '200' }, commits: { type: 'string', default: '50' }, frames: { type: 'string', default: '3000' }, runs: { type: 'string', default: '12' }, against: { type: 'string' } },
});
const hose = await generatedFirehose(Number(values.repos), Number(values.commits), (l) => console.error(l));
const buf = readFileSync(hose.file);
const frames: CommitFrame[] = [];
for (let o = 0; o < buf.length && frames.length < Number(values.frames); ) {
  const len = buf.readUInt32BE(o);
  const f = decodeFrame(new Uint8Array(buf.buffer, buf.byteOffset + o + 4, len));
  o += 4 + len;
  if (f.t === '#commit') frames.push(f);
}
type Check = (f: CommitFrame, key: string) => Promise<unknown>;
const checks: [string, Check][] = [['this', checkCommitFrame]];
if (values.against) {
  const other = (await import(pathToFileURL(resolve(values.against, 'sync/verify-commit.ts')).href)) as { checkCommitFrame: Check };
  checks.push(['against', other.checkCommitFrame]);
}
const runs = new Map<string, number[]>(checks.map(([n]) => [n, []]));
for (let r = 0; r < Number(values.runs); r++) {
  for (const [name, check] of r % 2 ? [...checks].reverse() : checks) {
    const c0 = process.cpuUsage();
    for (const f of frames) await check(f, hose.signingKey);
    const c = process.cpuUsage(c0);
    runs.get(name)!.push((c.user + c.system) / frames.length);
  }
}
const summary = (xs: number[]) => {
  const s = xs.slice(2).sort((a, b) => a - b);
  return { min: round1(s[0]!), median: round1(s[Math.floor(s.length / 2)]!), all: xs.map(round1) };
};
console.log(JSON.stringify({ frames: frames.length, cpuUsPerFrame: Object.fromEntries([...runs].map(([n, xs]) => [n, summary(xs)])) }));

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
