/**
 * The node flags a repowalk process gets (scripts/env.sh, `repowalk_node_flags`): a worker whose
 * every job is walk or maintenance gets REPOWALK_WALK_NODE_FLAGS, every other command
 * REPOWALK_NODE_FLAGS; and ./repowalk starts node with them.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');
const env = { ...process.env, REPOWALK_NODE_FLAGS: '--flags-of-all', REPOWALK_WALK_NODE_FLAGS: '--flags-of-walk' };

async function flagsFor(args: string[]): Promise<string> {
  const { stdout } = await run('bash', ['-c', 'source scripts/env.sh >/dev/null && repowalk_node_flags "$@"', 'flags', ...args], { cwd: ROOT, env });
  return stdout.trim();
}

describe('repowalk_node_flags', () => {
  it('gives the walk flags to a worker whose every job is walk or maintenance, in either form of --job', async () => {
    expect(await flagsFor(['worker', '--job', 'walk'])).toBe('--flags-of-walk');
    expect(await flagsFor(['worker', '--job=walk'])).toBe('--flags-of-walk');
    expect(await flagsFor(['worker', '--job', 'walk', '--job=maintenance'])).toBe('--flags-of-walk');
    expect(await flagsFor(['worker', '--job', 'maintenance'])).toBe('--flags-of-walk');
  });

  it('gives the common flags to a worker of every job, of any other job, or of walk and another', async () => {
    expect(await flagsFor(['worker'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job', 'backfill'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job', 'walk', '--job', 'backfill'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job=walk', '--job=sync'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job=maintenance', '--job', 'serve'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job'])).toBe('--flags-of-all');
    expect(await flagsFor(['worker', '--job', 'walk', '--job'])).toBe('--flags-of-all');
  });

  it('gives the common flags to every other command, whatever its arguments', async () => {
    expect(await flagsFor([])).toBe('--flags-of-all');
    expect(await flagsFor(['walk', 'start', '--job', 'walk'])).toBe('--flags-of-all');
    expect(await flagsFor(['demo'])).toBe('--flags-of-all');
  });
});

describe('./repowalk', () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('starts node with the flags chosen for its arguments', async () => {
    dir = await mkdtemp(join(tmpdir(), 'repowalk-flags-'));
    // A module node preloads (--import) prints the flags the process got.
    const probe = join(dir, 'probe.mjs');
    await writeFile(probe, "process.stderr.write(`execArgv ${JSON.stringify(process.execArgv)}\\n`);\n");
    const flags = { ...process.env, REPOWALK_NODE_FLAGS: `--import=${probe} --max-semi-space-size=3`, REPOWALK_WALK_NODE_FLAGS: `--import=${probe} --max-semi-space-size=17` };
    const execArgv = async (args: string[]) => {
      const { stderr } = await run(join(ROOT, 'repowalk'), args, { cwd: ROOT, env: flags });
      return JSON.parse(/execArgv (.*)/.exec(stderr)![1]!) as string[];
    };
    expect(await execArgv(['worker', '--job', 'walk', '--help'])).toContain('--max-semi-space-size=17');
    expect(await execArgv(['worker', '--job', 'backfill', '--help'])).toContain('--max-semi-space-size=3');
    expect(await execArgv(['jobs', 'list'])).toContain('--max-semi-space-size=3');
  });
});
