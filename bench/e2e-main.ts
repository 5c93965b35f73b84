// `node bench/e2e-main.ts --repos N --temporal ADDR --database-url URL [--page-size 1000] [--lanes 16] [--warmup 3] [--key-per-repo]`:
// bench/e2e.ts in a process of its own. `--page-size 0` leaves the page size to the workflow's default.
// `--warmup W` backfills the same repos W times first (the mirror emptied after each), so that the
// figures are a warm worker's; the warm-up passes' own figures (the first: a cold worker) are in `warmups`.
// Three by default: V8 optimizes a function called once per repo only after thousands of calls, and
// after one pass of 2,000 repos its compiler threads were still compiling the hot path (TurboFan
// for the CAR and MST readers, the HTTP parser, the store's plan), about 0.15 ms of CPU a repo in
// the measured pass; `perf record -e cpu-clock` counted their samples at 440, 330, 170 and 110 in
// the first four passes of 2,000. A worker backfilling the network runs millions of repos past that.
// `--timeline` adds where each pass's wall time went (pages, lanes busy, store batches; ingest/timeline.ts).
// `--key-per-repo` signs each repo with a key of its own, as on the network (the default: one key for all).
import { parseArgs } from 'node:util';
import { benchE2e } from './e2e.ts';

const { values } = parseArgs({ options: { repos: { type: 'string', default: '2000' }, records: { type: 'string', default: '10' }, workers: { type: 'string', default: '1' }, 'page-size': { type: 'string', default: '1000' }, lanes: { type: 'string', default: '16' }, warmup: { type: 'string', default: '3' }, 'key-per-repo': { type: 'boolean', default: false }, timeline: { type: 'boolean', default: false }, temporal: { type: 'string' }, 'database-url': { type: 'string' } } });
if (!values.temporal || !values['database-url']) throw new Error('bench/e2e-main.ts needs --temporal and --database-url (bench/run.ts passes them)');
const result = await benchE2e({ repos: Number(values.repos), records: Number(values.records), temporalAddress: values.temporal, databaseUrl: values['database-url'], workers: Number(values.workers), pageSize: Number(values['page-size']), lanes: Number(values.lanes), warmup: Number(values.warmup), keyPerRepo: values['key-per-repo'], timeline: values.timeline });
console.log(JSON.stringify(result));
process.exit(0);
