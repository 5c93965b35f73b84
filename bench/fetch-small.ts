// `node bench/fetch-small.ts [--repos 2000] [--records 10] [--lanes 16] [--rounds 3] [--verify] [--key-per-repo]`:
// the network half of a small repo's backfill alone — resolve its DID at the static PDS's PLC,
// GET its CAR (and, with --verify, verify it) — for N repos, `lanes` at a time, as the backfill
// pipeline calls them. Prints CPU microseconds per repo of this process (the static PDS runs in a
// process of its own), per round; the first round warms up.
// To profile it, or bench/e2e-main.ts: `node --cpu-prof` samples wall time, and on a loaded machine a
// thread taken off the CPU is charged to where it resumes (the socket write that woke the static
// PDS showed as a fifth of the samples, its system time being a tenth of that). CPU time, kernel and
// V8's own threads included: `perf record -e cpu-clock -g -- node --perf-basic-prof bench/fetch-small.ts …`
// (then `perf report --tid <main thread> --time <round's span>`).
// `--key-per-repo` signs each repo with a key of its own, as on the network (and as the e2e bench
// does), and each round backfills repos of its own (`repos` × `rounds` are served: `--repos 1000
// --rounds 4` and `--repos 2000 --rounds 2` use the e2e bench's 4,000), so that no round finds a
// key the verifier parsed before.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { IdentityCache, Politeness, openRepo, resolveDid } from '../atproto/net/index.ts';
import { verifyRepoStream } from '../atproto/verify.ts';
import { smallRepos } from '../atproto/testing/static-pds.ts';

const { values } = parseArgs({ options: { repos: { type: 'string', default: '2000' }, records: { type: 'string', default: '10' }, lanes: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' }, verify: { type: 'boolean', default: false }, 'key-per-repo': { type: 'boolean', default: false } } });
const keyPerRepo = values['key-per-repo'];
const n = Number(values.repos);
const served = keyPerRepo ? n * Number(values.rounds) : n;
const all = await smallRepos(served, Number(values.records), (l) => console.error(l), { keyPerRepo });
const script = fileURLToPath(new URL('./static-pds-main.ts', import.meta.url));
const child = spawn(process.execPath, [script, '--repos', String(served), '--records', values.records, ...(keyPerRepo ? ['--key-per-repo'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
let url = '';
for await (const l of createInterface({ input: child.stdout! })) {
  url = (JSON.parse(l) as { url: string }).url;
  break;
}

const identities = new IdentityCache();
const politeness = new Politeness({ concurrency: Number(values.lanes) });
const deadline = { deadlineMs: 120_000, minBytesPerSecond: 32 * 1024 };
async function one(did: string): Promise<number> {
  // As backfill/pipeline.ts resolves and verifies: the document read afresh, its key decoded once.
  const id = await resolveDid(did, { plcUrl: `${url}/plc`, allowPrivate: true, cache: identities, fresh: true, timeoutMs: 30_000, ...deadline, verifyHandle: false });
  const body = await openRepo(id.pds, did, { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000, ...deadline, politeness, allowPrivate: true });
  const signingKey = { didKey: id.signingKey, type: id.signingKeyType, point: id.signingKeyPoint };
  if (values.verify) return (await verifyRepoStream(body, { did, signingKey, caps: { maxBytes: 64 * 1024 * 1024 } })).records.length;
  let bytes = 0;
  for await (const c of body) bytes += c.byteLength;
  return bytes;
}

const rounds: Array<{ cpuUsPerRepo: number; systemUsPerRepo: number; reposPerSecond: number }> = [];
for (let r = 0; r < Number(values.rounds); r++) {
  const repos = keyPerRepo ? all.slice(r * n, (r + 1) * n) : all;
  const t = performance.now();
  const cpu0 = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: Number(values.lanes) }, async () => {
      while (next < repos.length) await one(repos[next++]!.did);
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  rounds.push({ cpuUsPerRepo: Math.round((cpu.user + cpu.system) / repos.length), systemUsPerRepo: Math.round(cpu.system / repos.length), reposPerSecond: Math.round(repos.length / ((performance.now() - t) / 1000)) });
}
console.log(JSON.stringify({ repos: n, lanes: Number(values.lanes), verify: values.verify, rounds }));
child.kill();
process.exit(0);
