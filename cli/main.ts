/**
 * repowalk's command line: wires configuration to the modules that do the work.
 *   repowalk stack up|down|status      the local stack (Temporal, PostgreSQL, S3)
 *   repowalk demo                      a local PDS with sample accounts, backfilled into the mirror
 *   repowalk backfill | walk | schedule …   the three capabilities (see USAGE)
 *   repowalk worker [--job NAME]...    run jobs' workflows and activities until SIGTERM
 *   repowalk jobs list                 the job registry
 *   repowalk serve                     serve the mirror (XRPC, tap event stream, admin)
 *   repowalk migrate                   apply database migrations
 *   repowalk ping [message]            run the smallest workflow end to end
 *   repowalk config                    every option with its default, and the values in force
 */
import { loadConfig, describeOptions, redactedConfig, redactCredentials, ConfigError } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { parseArgs } from 'node:util';
import { HELP_COMMANDS, helpFor } from './help.ts';
import { JOBS, checkJobConfig, selectJobs, JobConfigError, UnknownJobError } from '../workers/jobs.ts';
import { UsageError } from './usage.ts';
import { taskQueueFor } from '../config/task-queues.ts';

const USAGE = `usage: repowalk <command>
  stack up | down | status   start, stop or describe the local stack (Temporal dev server, PostgreSQL, S3)
  demo [--workers N]         the main job on local data: a local PDS with sample accounts, backfilled
  worker [--job NAME]...     run the named jobs' workflows and activities (default: all)
  jobs list                  the jobs a worker can run, with their task queues
  backfill add <did…> | --pds URL | --file PATH   mirror repos [--mode filter --include P --exclude P --signal P --ephemeral SECONDS --blobs --pages-in-flight N --wait]
  backfill status [did]      repos by state, or one repo's state and its workflow
  backfill resync <did>      retry a repo now
  walk start <type> [flags]  walk the mirror: scrub, validate, corpus, compression-benefit (see README)
  walk status|pause|resume|cancel <id>, walk list
  schedule apply [--dry-run] | list | trigger NAME   the periodic jobs' Temporal Schedules, from configuration
  sync start <host> | status [host] | pause | resume | stop <host>   live sync from a relay's or PDS's firehose
  serve [--host H] [--port P]   serve the mirror: XRPC, the tap event stream (/channel), admin (see README)
  migrate                    apply database migrations
  ping [message]             run the ping workflow end to end
  config                     print every option, its default, and the values in force`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    console.log(USAGE);
    return cmd ? 0 : 2;
  }
  // Before configuration and any connection: `walk start --help` must not start a walk.
  const help = helpFor(argv);
  if (help !== undefined) {
    console.log(help);
    return 0;
  }
  if (!HELP_COMMANDS.includes(cmd)) {
    console.error(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
    return 2;
  }
  const config = loadConfig();
  switch (cmd) {
    case 'config':
      console.log(describeOptions());
      console.log('\nin force:\n' + JSON.stringify(redactedConfig(config), null, 2));
      return 0;
    case 'stack': {
      // Imported by the commands that use them, as the others below are: a worker that loaded
      // the stack (and through it the S3 server's SDK) would hold it for its life.
      const { stackDown, stackServe, stackUp, describeStack } = await import('./stack-commands.ts');
      const sub = rest[0];
      if (sub === 'up') {
        console.log(describeStack(await stackUp(config)));
        return 0;
      }
      if (sub === 'down') {
        console.log((await stackDown(config)) ? 'stack stopped' : `no stack running in ${config.stateDir}`);
        return 0;
      }
      if (sub === 'status') {
        const info = resolveEndpoints(config, { database: false }).stack;
        console.log(info ? describeStack(info) : `no stack running in ${config.stateDir}`);
        return info ? 0 : 1;
      }
      if (sub === 'serve') {
        await stackServe(config);
        return 0;
      }
      console.error(`unknown stack command ${JSON.stringify(sub ?? '')}; expected up, down or status`);
      return 2;
    }
    case 'migrate': {
      const { connectPool } = await import('../storage/db/pool.ts');
      const { migrate } = await import('../storage/db/migrate.ts');
      const pool = await connectPool(resolveEndpoints(config).databaseUrl);
      try {
        const result = await migrate(pool);
        console.log(result.applied.length ? `applied ${result.applied.join(', ')}` : 'schema up to date');
      } finally {
        await pool.end();
      }
      return 0;
    }
    case 'worker': {
      const { values } = parseArgs({ args: rest, options: { job: { type: 'string', multiple: true } }, strict: true });
      const jobs = selectJobs(values.job ?? [], config.worker.jobsAllow, config.worker.jobsBlock);
      checkJobConfig(jobs, config);
      const { runWorker } = await import('../workers/worker.ts');
      await runWorker({
        config,
        endpoints: resolveEndpoints(config),
        jobs,
        metricsHost: config.worker.metricsHost,
        onReady: ({ taskQueues }) => console.log(`worker running jobs ${jobs.map((j) => j.name).join(', ')} on task queues ${taskQueues.join(', ')}`),
      });
      return 0;
    }
    case 'jobs': {
      for (const job of JOBS) {
        console.log(`${job.name.padEnd(12)} ${taskQueueFor(config, job.name).padEnd(24)} ${job.description}`);
        console.log(`${' '.repeat(13)}workflows: ${job.workflows.join(', ')}`);
        if (job.schedules.length > 0) console.log(`${' '.repeat(13)}schedules: ${job.schedules.map((n) => `${config.temporal.taskQueue}-${n}`).join(', ')}`);
      }
      return 0;
    }
    case 'ping': {
      const { runPing } = await import('./demo.ts');
      const result = await runPing(config, rest.join(' ') || 'ping');
      console.log(JSON.stringify(result, null, 2));
      return 0;
    }
    case 'backfill': {
      const { backfillCommand } = await import('./backfill-commands.ts');
      return backfillCommand(config, rest);
    }
    case 'walk': {
      const { walkCommand } = await import('./walk-commands.ts');
      return walkCommand(config, rest);
    }
    case 'sync': {
      const { syncCommand } = await import('./sync-commands.ts');
      return syncCommand(config, rest);
    }
    case 'schedule': {
      const { scheduleCommand } = await import('./schedule-commands.ts');
      return scheduleCommand(config, rest);
    }
    case 'serve': {
      const { serveCommand } = await import('./serve-commands.ts');
      return serveCommand(config, rest);
    }
    case 'demo': {
      const { values } = parseArgs({ args: rest, options: { workers: { type: 'string', default: '1' } }, strict: true });
      const workers = Number(values.workers);
      if (!Number.isInteger(workers) || workers < 1 || workers > 32) throw new Error(`demo --workers takes a whole number from 1 to 32, not ${JSON.stringify(values.workers)}`);
      const { runDemo } = await import('./demo.ts');
      await runDemo(config, { workers });
      return 0;
    }
    default:
      console.error(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    // Every error is printed through redactCredentials: a message may quote a URL option.
    if (err instanceof ConfigError || err instanceof UnknownJobError || err instanceof JobConfigError || err instanceof UsageError || (err as { code?: string })?.code?.startsWith('ERR_PARSE_ARGS')) console.error(`repowalk: ${redactCredentials(err.message)}`);
    else console.error(`repowalk: ${redactCredentials(err instanceof Error ? ((process.env.REPOWALK_DEBUG ? err.stack : err.message) ?? '') : String(err))}`);
    process.exit(1);
  },
);
