/**
 * Every repowalk option, in one table: its environment variable, its key in the config file,
 * its default, what it means, and the zod schema its value must pass. `repowalk config`
 * prints this table; `loadConfig` reads it. Adding an option is adding a row here: `Config`
 * follows from the table, and the compiler finds the rest.
 */
import { z } from 'zod';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { SCHEDULE_NAMES } from './schedule-names.ts';
import { BackfillSettings } from '../backfill/settings.ts';

const port = z.coerce
  .number({ error: 'expected a port number from 1 to 65535' })
  .int('expected a port number from 1 to 65535')
  .min(1, 'expected a port number from 1 to 65535')
  .max(65535, 'expected a port number from 1 to 65535');
const positiveInt = z.coerce.number({ error: 'expected a whole number ≥ 1' }).int('expected a whole number ≥ 1').min(1, 'expected a whole number ≥ 1');
const bool = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0', 'yes', 'no'])])
  .transform((v) => v === true || v === 'true' || v === '1' || v === 'yes');
const url = z.string().url();
const list = z
  .union([z.array(z.string()), z.string()])
  .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter((s) => s.length > 0));
const hostPort = z.string().regex(/^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$/, 'expected host:port');

export interface OptionSpec {
  /** Environment variable that sets it. */
  env: string;
  /** Dotted key in the JSON config file. */
  key: string;
  /** Default when neither the environment nor the file sets it; `undefined` means unset. */
  default: (ctx: DefaultsContext) => unknown;
  /** Shown by `repowalk config`. */
  defaultText: string;
  doc: string;
  schema: z.ZodType;
  /** Never printed, logged, or put in a workflow input. */
  secret?: boolean;
}

export interface DefaultsContext {
  cwd: string;
  /** Already-resolved values, for defaults derived from other options. */
  get(key: string): unknown;
}

const cacheHome = () => process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');

export const OPTIONS = [
  {
    env: 'REPOWALK_STATE_DIR', key: 'stateDir', schema: z.string().min(1),
    default: (c) => resolve(c.cwd, '.repowalk'), defaultText: '<cwd>/.repowalk',
    doc: 'Where the local stack keeps its data (Temporal history, PostgreSQL, S3 server, blob directory, logs).',
  },
  {
    env: 'REPOWALK_CACHE_DIR', key: 'cacheDir', schema: z.string().min(1),
    default: () => join(cacheHome(), 'repowalk'), defaultText: '$XDG_CACHE_HOME/repowalk or ~/.cache/repowalk',
    doc: 'Where built tools (Temporal CLI, versitygw) and provisioned Node versions are cached, keyed by version.',
  },
  {
    env: 'REPOWALK_LOG_LEVEL', key: 'logLevel', schema: z.enum(['debug', 'info', 'warn', 'error']),
    default: () => 'info', defaultText: 'info', doc: 'Least severe log level printed.',
  },
  {
    env: 'TEMPORAL_ADDRESS', key: 'temporal.address', schema: hostPort,
    default: () => undefined, defaultText: 'the local stack, or 127.0.0.1:<temporal.port>',
    doc: 'Temporal frontend (host:port). Same variable as the temporal CLI.',
  },
  {
    env: 'TEMPORAL_NAMESPACE', key: 'temporal.namespace', schema: z.string().min(1),
    default: () => 'default', defaultText: 'default', doc: 'Temporal namespace. Same variable as the temporal CLI.',
  },
  {
    env: 'REPOWALK_TASK_QUEUE', key: 'temporal.taskQueue', schema: z.string().min(1),
    default: () => 'repowalk', defaultText: 'repowalk', doc: 'Task queue prefix; each job runs on `<prefix>-<job>`.',
  },
  {
    env: 'REPOWALK_TEMPORAL_PORT', key: 'temporal.port', schema: port,
    default: () => 7233, defaultText: '7233', doc: 'Port of the local dev server started by `repowalk stack up`.',
  },
  {
    env: 'REPOWALK_TEMPORAL_UI_PORT', key: 'temporal.uiPort', schema: port,
    default: () => 8233, defaultText: '8233', doc: 'Port of the local dev server\'s Web UI.',
  },
  {
    env: 'DATABASE_URL', key: 'database.url', schema: url, secret: true,
    default: () => undefined, defaultText: 'the local stack\'s embedded PostgreSQL',
    doc: 'PostgreSQL connection URL. When set, `stack up` starts no PostgreSQL of its own.',
  },
  {
    env: 'REPOWALK_PG_PORT', key: 'database.port', schema: port,
    default: () => 55432, defaultText: '55432', doc: 'Port of the embedded PostgreSQL started by `repowalk stack up`.',
  },
  {
    env: 'REPOWALK_PG_POOL_MAX', key: 'database.poolMax', schema: positiveInt,
    default: () => 8, defaultText: '8', doc: 'Connections per process.',
  },
  {
    env: 'REPOWALK_BLOBSTORE', key: 'blobstore.kind', schema: z.enum(['local', 's3', 'multiplex']),
    default: () => 'local', defaultText: 'local',
    doc: '`local`: a directory; `s3`: the first bucket of s3.buckets; `multiplex`: every bucket in s3.buckets (plus the directory when blobstore.multiplexLocal).',
  },
  {
    env: 'REPOWALK_BLOB_DIR', key: 'blobstore.dir', schema: z.string().min(1),
    default: (c) => join(String(c.get('stateDir')), 'blobs'), defaultText: '<stateDir>/blobs',
    doc: 'Directory of the local blobstore.',
  },
  {
    env: 'REPOWALK_BLOB_MULTIPLEX_LOCAL', key: 'blobstore.multiplexLocal', schema: bool,
    default: () => false, defaultText: 'false', doc: 'In multiplex mode, also keep a copy in blobstore.dir.',
  },
  {
    env: 'REPOWALK_WRITE_QUORUM', key: 'blobstore.writeQuorum', schema: positiveInt,
    default: () => 1, defaultText: '1', doc: 'Multiplex: components a put must reach to succeed; the others go to the heal queue.',
  },
  {
    env: 'REPOWALK_S3_ENDPOINT', key: 's3.endpoint', schema: url,
    default: () => undefined, defaultText: 'the local stack\'s S3 server, or AWS when there is no stack',
    doc: 'S3 endpoint URL.',
  },
  {
    env: 'REPOWALK_S3_REGION', key: 's3.region', schema: z.string().min(1),
    default: () => 'us-east-1', defaultText: 'us-east-1', doc: 'S3 region.',
  },
  {
    env: 'REPOWALK_S3_BUCKETS', key: 's3.buckets', schema: list.pipe(z.array(z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected S3 bucket names')).min(1)),
    default: () => ['repowalk-a', 'repowalk-b'], defaultText: 'repowalk-a,repowalk-b',
    doc: 'Buckets, comma-separated; the local stack creates them.',
  },
  {
    env: 'REPOWALK_S3_ACCESS_KEY_ID', key: 's3.accessKeyId', schema: z.string().min(1),
    default: () => undefined, defaultText: 'the local stack\'s key', doc: 'S3 access key id.',
  },
  {
    env: 'REPOWALK_S3_SECRET_ACCESS_KEY', key: 's3.secretAccessKey', schema: z.string().min(1), secret: true,
    default: () => undefined, defaultText: 'the local stack\'s secret', doc: 'S3 secret key.',
  },
  {
    env: 'REPOWALK_S3_FORCE_PATH_STYLE', key: 's3.forcePathStyle', schema: bool,
    default: () => true, defaultText: 'true', doc: 'Path-style bucket addressing (local S3 servers need it).',
  },
  {
    env: 'REPOWALK_S3_PORT', key: 's3.port', schema: port,
    default: () => 7070, defaultText: '7070', doc: 'Port of the S3 server started by `repowalk stack up`.',
  },
  {
    env: 'REPOWALK_STACK_S3', key: 'stack.s3', schema: bool,
    default: () => true, defaultText: 'true', doc: 'Whether `repowalk stack up` starts the S3 server.',
  },
  {
    env: 'REPOWALK_STACK_UI', key: 'stack.ui', schema: bool,
    default: () => true, defaultText: 'true', doc: 'Whether the local Temporal dev server serves its Web UI.',
  },
  {
    env: 'REPOWALK_TEMPORAL', key: 'stack.temporal', schema: z.enum(['dev', 'server']),
    default: () => 'dev', defaultText: 'dev',
    doc: 'Which Temporal `repowalk stack up` runs: `dev` (temporal server start-dev, SQLite) or `server` (the real Temporal server v1.29.1 on the stack\'s PostgreSQL, SQL visibility, 4 history shards).',
  },
  {
    env: 'REPOWALK_PLC_URL', key: 'network.plcUrl', schema: url,
    default: () => 'https://plc.directory', defaultText: 'https://plc.directory', doc: 'PLC directory that did:plc DIDs resolve against.',
  },
  {
    env: 'REPOWALK_ALLOW_PRIVATE_ADDRESSES', key: 'network.allowPrivateAddresses', schema: bool,
    default: () => false, defaultText: 'false',
    doc: 'Allow PDS and did:web hosts on loopback or private addresses (a local PDS, tests). Off, such hosts are refused.',
  },
  {
    env: 'REPOWALK_VERIFY_HANDLES', key: 'network.verifyHandles', schema: bool,
    default: () => true, defaultText: 'true',
    doc: 'Check each handle both ways (DNS TXT _atproto.<handle>, then https://<handle>/.well-known/atproto-did) and store an unverified one as handle.invalid. Off only for a network whose handles resolve nowhere (a local PDS with .test handles: the demo, tests).',
  },
  {
    env: 'REPOWALK_IDENTITY_TTL_SECONDS', key: 'network.identityTtlSeconds', schema: positiveInt,
    default: () => 3600, defaultText: '3600', doc: 'How long a resolved DID document is cached (dropped before each backfill of that DID).',
  },
  {
    env: 'REPOWALK_PDS_CONCURRENCY', key: 'network.pdsConcurrency', schema: positiveInt,
    default: () => 4, defaultText: '4', doc: 'Requests in flight to one PDS host: from all workers together when politeness is shared (REPOWALK_PDS_POLITENESS), else per worker.',
  },
  {
    env: 'REPOWALK_PDS_MIN_INTERVAL_MS', key: 'network.pdsMinIntervalMs', schema: z.coerce.number().int().min(0),
    default: () => 0, defaultText: '0', doc: 'Least time between two request starts to one PDS host (across workers when politeness is shared).',
  },
  {
    env: 'REPOWALK_PDS_POLITENESS', key: 'network.pdsPoliteness', schema: z.enum(['shared', 'process']),
    default: () => 'shared', defaultText: 'shared',
    doc: '`shared`: the PDS concurrency, pacing and 429 cool-downs hold across every worker on the database (leases in PostgreSQL); `process`: each worker process is polite on its own.',
  },
  {
    env: 'REPOWALK_PDS_LEASE_SECONDS', key: 'network.pdsLeaseSeconds', schema: positiveInt,
    default: () => 30, defaultText: '30', doc: 'How long a shared PDS slot outlives a worker that died holding it.',
  },
  {
    env: 'REPOWALK_FETCH_TIMEOUT_SECONDS', key: 'network.fetchTimeoutSeconds', schema: positiveInt,
    default: () => 300, defaultText: '300', doc: 'Timeout of one repo or blob download.',
  },
  {
    env: 'REPOWALK_FETCH_DEADLINE_SECONDS', key: 'network.fetchDeadlineSeconds', schema: positiveInt,
    default: () => 300, defaultText: '300',
    doc: 'Total time one remote read (DID document, listing, repo, blob) may take, redirects, headers and body included, before it fails as resync `transport` with reason "too slow" (EDEADLINE); large bodies get more, see REPOWALK_FETCH_MIN_BYTES_PER_SECOND.',
  },
  {
    env: 'REPOWALK_FETCH_MIN_BYTES_PER_SECOND', key: 'network.fetchMinBytesPerSecond', schema: z.coerce.number().int().min(0),
    default: () => 16384, defaultText: '16384',
    doc: 'Least average rate a large download must keep: every byte read extends the deadline by 1/rate s, so a big repo arriving steadily finishes and a server dripping bytes does not hold a worker; 0 makes the deadline fixed.',
  },
  {
    env: 'REPOWALK_JOBS_ALLOW', key: 'worker.jobsAllow', schema: list,
    default: () => [], defaultText: 'all', doc: 'Jobs a worker may run, comma-separated (see `repowalk jobs list`).',
  },
  {
    env: 'REPOWALK_JOBS_BLOCK', key: 'worker.jobsBlock', schema: list,
    default: () => [], defaultText: 'none', doc: 'Jobs a worker never runs; wins over the allowlist and --job.',
  },
  {
    env: 'REPOWALK_STACK_PDS', key: 'stack.pds', schema: bool,
    default: () => false, defaultText: 'false (the demo turns it on)',
    doc: 'Whether `repowalk stack up` also starts a local reference PDS and PLC on loopback.',
  },
  {
    env: 'REPOWALK_METRICS_HOST', key: 'worker.metricsHost', schema: z.string().min(1),
    default: () => '127.0.0.1', defaultText: '127.0.0.1', doc: 'Address the health and metrics endpoint binds (0.0.0.0 to let another host scrape it).',
  },
  {
    env: 'REPOWALK_METRICS_PORT', key: 'worker.metricsPort', schema: z.coerce.number().int().min(0).max(65535),
    default: () => 0, defaultText: '0 (off)', doc: 'Port of the worker\'s health and Prometheus endpoint; 0 turns it off.',
  },
  {
    env: 'REPOWALK_SYNC_VERIFY_THREADS', key: 'worker.syncVerifyThreads', schema: z.coerce.number().int().min(0).max(64),
    default: () => 1, defaultText: '1',
    doc: 'Threads of each live-sync subscription that check commits (CAR hashes, signature, MST proof) while its own thread decodes and stores; 0 checks them on that thread.',
  },
  // Serving the mirror (`repowalk serve`, the `serve` job): XRPC, the tap event stream, admin.
  {
    env: 'REPOWALK_SERVE_HOST', key: 'serve.host', schema: z.string().min(1),
    default: () => '127.0.0.1', defaultText: '127.0.0.1', doc: 'Address the serve HTTP server binds (0.0.0.0 to serve beyond this host).',
  },
  {
    env: 'REPOWALK_SERVE_PORT', key: 'serve.port', schema: z.coerce.number().int().min(0).max(65535),
    default: () => 2480, defaultText: '2480', doc: 'Port of the serve HTTP server (XRPC, /channel, admin); 0 picks a free one.',
  },
  {
    env: 'REPOWALK_SERVE_ADMIN_TOKEN', key: 'serve.adminToken', schema: z.string().min(16, 'expected at least 16 characters'), secret: true,
    default: () => undefined, defaultText: 'unset (admin endpoints off)',
    doc: 'Bearer token of the admin endpoints (POST /repos/add, /repos/remove, /repos/resync); tap clients send it as their admin password.',
  },
  {
    env: 'REPOWALK_SERVE_STREAM_BUFFER_BYTES', key: 'serve.streamBufferBytes', schema: positiveInt,
    default: () => 4 * 1024 * 1024, defaultText: '4194304', doc: 'Per stream client: no more events are read while its send buffer holds more than this.',
  },
  {
    env: 'REPOWALK_SERVE_STALL_SECONDS', key: 'serve.stallSeconds', schema: positiveInt,
    default: () => 30, defaultText: '30', doc: 'A stream client whose buffer does not drain (or that acks nothing) for this long is dropped.',
  },
  {
    env: 'REPOWALK_SERVE_MAX_CONCURRENT_REPOS', key: 'serve.maxConcurrentRepos', schema: positiveInt,
    default: () => 4, defaultText: '4', doc: 'getRepo requests assembled at once (each may hold its packs in memory); more wait.',
  },
  // Periodic jobs (`repowalk schedule apply`): which schedules exist, how often each runs, and
  // the settings their workflows get.
  {
    env: 'REPOWALK_SCHEDULES_DISABLED', key: 'schedules.disabled', schema: list.pipe(z.array(z.enum(SCHEDULE_NAMES))),
    default: () => [], defaultText: 'none',
    doc: `Schedules \`schedule apply\` leaves out (and deletes when present), comma-separated: ${SCHEDULE_NAMES.join(', ')}.`,
  },
  {
    env: 'REPOWALK_RESYNC_SWEEP_SECONDS', key: 'schedules.resyncSweepSeconds', schema: positiveInt,
    default: () => 300, defaultText: '300', doc: 'How often the resync sweep starts a backfill for each repo whose retry time has passed and that has no running workflow.',
  },
  {
    env: 'REPOWALK_GONE_RECHECK_SECONDS', key: 'schedules.goneRecheckSeconds', schema: positiveInt,
    default: () => 3600, defaultText: '3600', doc: 'How often the gone re-check tries the gone repos whose re-check time has passed.',
  },
  {
    env: 'REPOWALK_RETENTION_SECONDS', key: 'schedules.retentionSeconds', schema: positiveInt,
    default: () => 3600, defaultText: '3600', doc: 'How often events past their retention (ephemeral mode) are trimmed.',
  },
  {
    env: 'REPOWALK_GC_SECONDS', key: 'schedules.gcSeconds', schema: positiveInt,
    default: () => 86400, defaultText: '86400', doc: 'How often GC runs (mark, sweep, repack).',
  },
  {
    env: 'REPOWALK_ROTATING_SCRUB_SECONDS', key: 'schedules.rotatingScrubSeconds', schema: positiveInt,
    default: () => 86400, defaultText: '86400', doc: 'How often the rotating scrub walks its next sample.',
  },
  {
    env: 'REPOWALK_ROTATING_VALIDATE_SECONDS', key: 'schedules.rotatingValidateSeconds', schema: positiveInt,
    default: () => 86400, defaultText: '86400', doc: 'How often the rotating validate walks its next sample.',
  },
  {
    env: 'REPOWALK_STATS_SECONDS', key: 'schedules.statsSeconds', schema: positiveInt,
    default: () => 300, defaultText: '300', doc: 'How often the mirror\'s counts (repos by state, blocks, packs, bytes) are refreshed.',
  },
  {
    env: 'REPOWALK_REFRESH_SECONDS', key: 'schedules.refreshSeconds', schema: positiveInt,
    default: () => 3600, defaultText: '3600',
    doc: 'How often the `refresh` workflow (job sync) asks getLatestCommit of each active repo no subscription covers, fetching getRepo?since= only where the rev moved.',
  },
  {
    env: 'REPOWALK_ROTATING_SAMPLE_RATE', key: 'maintenance.rotatingSampleRate', schema: positiveInt,
    default: () => 7, defaultText: '7', doc: 'Rotating scrub and validate: each run samples 1/R of the mirror, the offset advancing one step per run, so R runs cover it all.',
  },
  {
    env: 'REPOWALK_ROTATING_SCRUB_REPAIR', key: 'maintenance.rotatingScrubRepair', schema: bool,
    default: () => true, defaultText: 'true', doc: 'Whether the rotating scrub rewrites missing and corrupt copies from a verified one.',
  },
  {
    env: 'REPOWALK_GC_GRACE_SECONDS', key: 'maintenance.gcGraceSeconds', schema: positiveInt,
    default: () => 86400, defaultText: '86400', doc: 'GC deletes a pack, blob or unindexed object only when it is older than this.',
  },
  {
    env: 'REPOWALK_GC_REPACK_BELOW', key: 'maintenance.gcRepackBelow', schema: z.coerce.number({ error: 'expected a share from 0 to 1' }).min(0, 'expected a share from 0 to 1').max(1, 'expected a share from 0 to 1'),
    default: () => 0.25, defaultText: '0.25', doc: 'GC copies the live blocks of a pack whose live share of bytes fell below this into a new pack; 0 turns repacking off.',
  },
  {
    env: 'REPOWALK_RESYNC_SETTINGS', key: 'maintenance.resyncSettings',
    // A JSON string from the environment, an object from the config file.
    schema: z.unknown().transform((v, ctx) => {
      if (typeof v !== 'string') return v;
      try {
        return JSON.parse(v) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'expected a JSON object of backfill settings' });
        return z.NEVER;
      }
    }).pipe(BackfillSettings),
    default: () => BackfillSettings.parse({}), defaultText: '{} (full mode, no blobs)',
    doc: 'Backfill settings (JSON, as in a backfill input: filter, ephemeralRetentionSeconds, blobs, …) the resync sweep and gone re-check start repos with; the mirror does not record the settings a repo was first added with.',
  },
] as const satisfies readonly OptionSpec[];

/** One row of the table. */
type Row = (typeof OPTIONS)[number];

/** A row's value: what its schema outputs, or `undefined` when its default leaves it unset. */
type ValueOf<K extends string> =
  Extract<Row, { key: K }> extends infer R extends Row ? z.output<R['schema']> | (undefined extends ReturnType<R['default']> ? undefined : never) : never;

type TopKey = Exclude<Row['key'], `${string}.${string}`>;
type Section = Row['key'] extends infer K ? (K extends `${infer S}.${string}` ? S : never) : never;
type FieldOf<S extends string> = Row['key'] extends infer K ? (K extends `${S}.${infer F}` ? F : never) : never;

/**
 * The validated configuration, derived from the table: a row `temporal.port` with a port schema
 * is `config.temporal.port: number`, and a row whose default is unset is `… | undefined`.
 */
export type Config = { [K in TopKey]: ValueOf<K> } & { [S in Section]: { [F in FieldOf<S>]: ValueOf<`${S}.${F}`> } };
