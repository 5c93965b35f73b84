/**
 * Starts the real stack once for the whole test run, on free ports in a scratch directory:
 * Temporal dev server, embedded PostgreSQL, and versitygw with two buckets. Tests receive its
 * addresses through `testStack()` (test/stack.ts).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../config/load.ts';
import { startStack, type RunningStack } from '../stack/stack.ts';
import type { TestStack } from './stack.ts';

let stack: RunningStack | undefined;
let stateDir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  // REPOWALK_TEMPORAL=server runs the suite against the real Temporal server on PostgreSQL.
  const config = loadConfig({ env: { REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR, REPOWALK_TEMPORAL: process.env.REPOWALK_TEMPORAL } });
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-test-'));
  // PostgreSQL, run as its own user when we are root, must reach its folder inside.
  await chmod(stateDir, 0o755);
  const started = Date.now();
  // Installing the reference PDS (Node 22, better-sqlite3 compiled) takes ~2 minutes on a cold
  // machine: do it once here, beside the stack, not inside some test file's hook timeout.
  const { ensurePdsRuntime } = await import('../stack/pds.ts');
  const pdsRuntime = ensurePdsRuntime({ timeoutMs: 15 * 60_000 });
  pdsRuntime.catch(() => {});
  stack = await startStack({
    stateDir,
    cacheDir: config.cacheDir,
    temporal: { port: 0, uiPort: 0, ui: true, namespace: 'default', mode: config.stack.temporal },
    postgres: { port: 0 },
    s3: { enabled: true, port: 0, buckets: ['repowalk-a', 'repowalk-b'], region: 'us-east-1' },
    log: (l) => console.log(`[stack] ${l}`),
  });
  await pdsRuntime;
  const { info } = stack;
  console.log(`[stack] up in ${((Date.now() - started) / 1000).toFixed(1)} s: temporal (${config.stack.temporal}) ${info.temporal.address} (ui ${info.temporal.uiUrl}), s3 ${info.s3?.endpoint}, state ${stateDir}`);
  const provided: TestStack = {
    stateDir,
    temporal: { address: info.temporal.address, namespace: info.temporal.namespace, uiUrl: info.temporal.uiUrl ?? '', bin: info.temporal.bin },
    databaseUrl: info.postgres.url.replace(/\/repowalk$/, '/postgres'),
    s3: { ...info.s3! },
  };
  project.provide('stack', provided);
}

export async function teardown(): Promise<void> {
  await stack?.stop();
  if (stateDir && process.env.REPOWALK_KEEP_TEST_STATE !== '1') await rm(stateDir, { recursive: true, force: true });
}
