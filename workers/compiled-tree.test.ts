/**
 * `./repowalk` runs from a JavaScript tree stripped of types once and cached (scripts/compiled.mjs).
 * On a copy of the checkout: the tree is built once, rebuilt when a source changes or when it is
 * missing, keeps every line where it was, and a `repowalk worker` started from it — with Node's
 * type stripping turned off, so that loading any `.ts` module would fail — answers a workflow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { freshDatabase, testStack } from '../test/stack.ts';
import { spawnReadyWorker } from '../test/helpers.ts';
import { ping } from '../workflows/ping.ts';

const ROOT = join(import.meta.dirname, '..');
const NOT_COPIED = new Set(['node_modules', '.git', '.repowalk', 'test-artifacts']);
let copy: string;
const trees: string[] = [];
let worker: ChildProcess | undefined;
let client: Client | undefined;

/** `node scripts/compiled.mjs --tree` in the copy: the tree's folder. */
function tree(): string {
  const r = spawnSync(process.execPath, [join(copy, 'scripts', 'compiled.mjs'), '--tree'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`compiled.mjs --tree exited ${r.status}: ${r.stderr}`);
  const dir = r.stdout.trim();
  if (!trees.includes(dir)) trees.push(dir);
  return dir;
}

function filesUnder(dir: string, suffix: string): string[] {
  const out: string[] = [];
  for (const d of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (d.isFile() && d.name.endsWith(suffix) && !d.parentPath.includes('node_modules')) out.push(join(d.parentPath, d.name));
  }
  return out;
}

beforeAll(() => {
  copy = mkdtempSync(join(tmpdir(), 'repowalk-tree-'));
  cpSync(ROOT, copy, { recursive: true, filter: (src) => !NOT_COPIED.has(relative(ROOT, src).split('/')[0]!) && !src.endsWith('.log') });
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
});

afterAll(async () => {
  await client?.connection.close();
  if (worker && worker.exitCode === null) worker.kill('SIGKILL');
  for (const dir of trees) rmSync(dir, { recursive: true, force: true });
  if (copy) rmSync(copy, { recursive: true, force: true });
});

describe('the JavaScript tree', () => {
  let first: string;

  it('is built once: every .ts but the tests stripped, lines in place, imports of .js', () => {
    first = tree();
    const main = readFileSync(join(first, 'cli', 'main.js'), 'utf8');
    expect(main).toContain(`from '../config/load.js'`);
    expect(main).toContain(`import('../workers/worker.js')`);
    expect(main).not.toMatch(/\bfrom\s+'\.\.?\/[^']*\.ts'/);
    // Types are gone: the stripped module parses as JavaScript.
    expect(spawnSync(process.execPath, ['--check', join(first, 'workers', 'worker.js')]).status).toBe(0);
    const compiled = filesUnder(first, '.js');
    expect(compiled.length).toBeGreaterThan(50);
    for (const js of compiled) {
      const lines = (f: string) => readFileSync(f, 'utf8').split('\n').length;
      expect(lines(js), js).toBe(lines(join(copy, relative(first, js)).replace(/\.js$/, '.ts')));
    }
    expect(existsSync(join(first, 'workers', 'worker.test.js'))).toBe(false);
    const built = statSync(join(first, 'cli', 'main.js')).mtimeMs;
    expect(tree()).toBe(first);
    expect(statSync(join(first, 'cli', 'main.js')).mtimeMs).toBe(built);
  });

  it('is rebuilt when a source changes, and when it is missing', () => {
    appendFileSync(join(copy, 'cli', 'main.ts'), `\nconsole.error('built from the changed source');\n`);
    const changed = tree();
    expect(changed).not.toBe(first);
    expect(readFileSync(join(changed, 'cli', 'main.js'), 'utf8')).toContain('built from the changed source');
    rmSync(changed, { recursive: true });
    expect(tree()).toBe(changed);
    expect(existsSync(join(changed, 'cli', 'main.js'))).toBe(true);
  });

  it('runs `repowalk worker` without loading a .ts module, and the worker answers', async () => {
    const stack = testStack();
    const prefix = `tree-test-${process.pid}`;
    const spawned = await spawnReadyWorker(join(copy, 'repowalk'), ['worker', '--job', 'maintenance'], {
      ...process.env,
      // A .ts module imported anywhere in the worker would fail with ERR_UNKNOWN_FILE_EXTENSION.
      NODE_OPTIONS: '--no-experimental-strip-types',
      TEMPORAL_ADDRESS: stack.temporal.address,
      DATABASE_URL: await freshDatabase('compiled_tree'),
      REPOWALK_TASK_QUEUE: prefix,
      REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-blobs-')),
      REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-state-')),
    });
    worker = spawned.child;
    expect(spawned.output()).toContain('built from the changed source');
    client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }) });
    const result = await client.workflow.execute(ping, { taskQueue: `${prefix}-maintenance`, workflowId: `tree-ping-${Date.now()}`, args: [{ message: 'from the tree' }] });
    expect(result.message).toBe('from the tree');
    const exited = new Promise<number | null>((r) => worker!.once('exit', (code) => r(code)));
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 150_000);
});
