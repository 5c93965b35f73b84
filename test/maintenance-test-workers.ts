/**
 * In-process workers for the maintenance and schedule tests (workflows/maintenance.test.ts,
 * schedules/schedules.test.ts): the maintenance workflows and activities on the maintenance
 * queue, the walk workflows and activities on the walk queue, and `backfillRepo` on the backfill
 * queue with stand-in activities (the tests decide what an attempt at a repo comes to). Not used
 * in production (`repowalk worker` is).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NativeConnection, Worker, Runtime, DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import type { Stores } from '../activities/context.ts';
import type { RepoOutcome } from '../backfill/settings.ts';
import { maintenanceActivities } from '../activities/maintenance.ts';
import { walkActivities } from '../activities/walk.ts';

const ROOT = join(import.meta.dirname, '..');

export interface TestWorkers {
  queues: { maintenance: string; backfill: string; walk: string };
  /** DIDs `backfillRepoOnce` was called for, in order. */
  attempts: string[];
  stop(): Promise<void>;
}

export interface TestWorkerOptions {
  address: string;
  /** Task queue prefix: queues are `<prefix>-maintenance`, `<prefix>-backfill`, `<prefix>-walk`. */
  prefix: string;
  stores: Pick<Stores, 'pool' | 'blobs' | 'healQueue'>;
  /** What an attempt at a repo comes to. Default: a transport failure, so `backfillRepo` waits in backoff. */
  attempt?: (did: string) => Promise<RepoOutcome>;
}

let runtime = false;

export async function startTestWorkers(opts: TestWorkerOptions): Promise<TestWorkers> {
  if (!runtime) {
    runtime = true;
    Runtime.install({ logger: new DefaultLogger('WARN') });
  }
  const dir = await mkdtemp(join(tmpdir(), 'repowalk-maint-bundle-'));
  const entry = join(dir, 'workflows.ts');
  const from = (file: string, names: string[]) => `export { ${names.join(', ')} } from ${JSON.stringify(join(ROOT, 'workflows', file))};\n`;
  await writeFile(
    entry,
    from('maintenance.ts', ['resyncSweep', 'goneRecheck', 'retention', 'gc', 'rotatingWalk', 'stats']) +
      from('backfill-repo.ts', ['backfillRepo']) +
      from('walk.ts', ['walk']) +
      from('walk-slice.ts', ['walkSlice']),
  );
  // The entry lives outside the project: resolve packages from the project's node_modules.
  const { code } = await bundleWorkflowCode({
    workflowsPath: entry,
    webpackConfigHook: (config) => ({ ...config, resolve: { ...config.resolve, modules: [join(ROOT, 'node_modules'), 'node_modules'] } }),
    logger: new DefaultLogger('WARN'),
  });
  await rm(dir, { recursive: true, force: true });

  const queues = { maintenance: `${opts.prefix}-maintenance`, backfill: `${opts.prefix}-backfill`, walk: `${opts.prefix}-walk` };
  const attempts: string[] = [];
  const attempt = opts.attempt ?? (async (did: string): Promise<RepoOutcome> => ({ did, kind: 'retry', resync: 'transport', error: 'stand-in: no PDS in this test' }));
  const stores = { ...opts.stores, close: async () => {} };
  const connection = await NativeConnection.connect({ address: opts.address });
  const make = (taskQueue: string, activities: object) => Worker.create({ connection, taskQueue, workflowBundle: { code }, activities, shutdownGraceTime: '2 seconds' });
  const workers = await Promise.all([
    make(queues.maintenance, maintenanceActivities({ stores })),
    make(queues.walk, walkActivities({ stores })),
    make(queues.backfill, {
      async backfillRepoOnce(did: string): Promise<RepoOutcome> {
        attempts.push(did);
        return attempt(did);
      },
      async recordResync(): Promise<void> {},
    }),
  ]);
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    queues,
    attempts,
    async stop() {
      for (const w of workers) w.shutdown();
      await running;
      await connection.close();
    },
  };
}
