/**
 * `repowalk <command> … --help`: each command's usage, printed before configuration is loaded
 * or any server is contacted, so that asking how to start a walk can never start one (or fail
 * on a connection). Plain text only: this module imports nothing that connects anywhere.
 */
import { WALK_TYPE_NAMES } from '../graph/walks/names.ts';
import { SCHEDULE_NAMES } from '../config/schedule-names.ts';

const BACKFILL = `usage: repowalk backfill <command>
  add <did…> | --pds URL | --file PATH   mirror repos; exactly one source
      --file PATH          one DID a line, read by the WORKER from its own disk (not sent in the input)
      --mode full|filter   --include NSID --exclude NSID --signal NSID (repeatable; prefix patterns like app.bsky.*)
      --ephemeral SECONDS  keep events this long, no record index
      --blobs              mirror the blobs records reference
      --page-size N --concurrency N   DIDs per activity, repos at once inside one
      --id ID              workflow id (default backfill-bulk/<time>)
      --wait               show a live progress line, then the totals
  status [did]             repos by state, or one repo's state and its workflow
  resync <did>             retry a repo now`;

const STACK = `usage: repowalk stack <command>
  up        start the local stack (Temporal dev server, PostgreSQL, S3 server) on 127.0.0.1
  down      stop it
  status    print the address of each piece`;

const SCHEDULE = `usage: repowalk schedule <command>
  apply [--dry-run]   create or update every Temporal Schedule from configuration
  list                the schedules and their next runs
  trigger NAME        run one now: ${SCHEDULE_NAMES.join(', ')}`;

/** The walk command's usage (also printed for a bare `repowalk walk`). */
export const WALK_USAGE = `usage: repowalk walk <command>
  start <${WALK_TYPE_NAMES.join('|')}> [flags]   start a walk; prints its id
      --root DID|Type:key (repeatable; alias --walk-root)   default: every repo
      --include-node T --exclude-node T --include-edge E --exclude-edge E   (repeatable or comma-separated; groups: shallow, deep, sql, blocks, blobstore, all)
      --sample-rate R --sample-offset O --sample-path-regex RE
      --slices N --slice-parallelism P --page-size N --scheduled-max N --root-concurrency N
      --error-as-data   --tail-interval SECONDS   --heartbeat-seconds S   --id ID   --wait
      scrub: --repair --verify-bytes --grace-seconds S     validate: --check NAME (repeatable)
      corpus: --output-dir DIR     compression-benefit: --zstd-level L --dictionary-size BYTES --train-samples N
  status <id> [--once]     progress (a live bar on a terminal), totals and findings by check
  pause|resume|cancel <id>
  list                     walks (the server's order: newest first)
  findings <id> [--limit N]   findings as stored`;

/** The sync command's usage (also printed for a bare `repowalk sync` and after a usage error). */
export const SYNC_USAGE = `usage: repowalk sync <command>
  start <host>      follow <host>'s firehose (a relay or PDS origin, e.g. https://bsky.network)
      --run-seconds S (per activity run, default 60)  --max-batch N (frames per transaction, default 500)
      --blobs  --filter-include NSID --filter-exclude NSID --filter-signal NSID (repeatable; as backfill)
  status [host] [--once]   progress: cursor, events/s, lag, frames by type, outcomes (a live line on a terminal)
  pause|resume|stop <host>`;

const SERVE = `usage: repowalk serve [--host H] [--port P]
  serve the mirror until SIGTERM: XRPC as a PDS answers it, the tap event stream (/channel), admin endpoints (REPOWALK_SERVE_ADMIN_TOKEN), /metrics`;

const COMMANDS: Record<string, string> = {
  stack: STACK,
  demo: 'usage: repowalk demo [--workers N]\n  start the local stack, a reference PDS and PLC with sample accounts, a worker, and backfill every repo the PDS lists',
  worker: 'usage: repowalk worker [--job NAME]...\n  run the named jobs (default: all; see `repowalk jobs list`) until SIGTERM; migrates the database first',
  jobs: 'usage: repowalk jobs list\n  the jobs a worker can run, with their task queues, workflows and schedules',
  backfill: BACKFILL,
  walk: WALK_USAGE,
  schedule: SCHEDULE,
  sync: SYNC_USAGE,
  serve: SERVE,
  migrate: 'usage: repowalk migrate\n  apply database migrations (idempotent)',
  ping: 'usage: repowalk ping [message]\n  run the smallest workflow end to end and print its result',
  config: 'usage: repowalk config\n  print every option with its environment variable, file key and default, then the values in force (credentials redacted)',
};

/**
 * The usage to print when `argv` (the arguments after `repowalk`) asks for help after a
 * command: `--help` or `-h` anywhere before a `--`. Undefined when it does not, or when the
 * command is unknown (main prints the general usage then).
 */
export function helpFor(argv: string[]): string | undefined {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || !(cmd in COMMANDS)) return undefined;
  const end = rest.indexOf('--');
  const flags = end < 0 ? rest : rest.slice(0, end);
  if (!flags.includes('--help') && !flags.includes('-h') && rest[0] !== 'help') return undefined;
  return COMMANDS[cmd];
}

/** Every command `helpFor` knows (for tests). */
export const HELP_COMMANDS = Object.keys(COMMANDS);
