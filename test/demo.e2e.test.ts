/**
 * Issue 12 item 8: `./repowalk stack up | status | down` and `./repowalk demo` themselves, run as
 * an operator runs them, with a state directory and ports of their own (the test stack of the
 * global setup is not involved). The demo backfills every repo of its local PDS; run again, every
 * repo comes back unchanged; `stack down` stops every process it started, the worker included.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, tcpOpen } from '../stack/process.ts';

const ROOT = join(import.meta.dirname, '..');
let stateDir: string;
let env: NodeJS.ProcessEnv;
let ports: { temporal: number; ui: number; pg: number; s3: number };

function repowalk(args: string[], timeoutMs = 20 * 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(ROOT, 'repowalk'), args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0, stdout, stderr });
    });
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

beforeAll(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-demo-e2e-'));
  // Run as root, PostgreSQL runs as the postgres user, which must reach the state directory.
  await chmod(stateDir, 0o755);
  ports = { temporal: await freePort(), ui: await freePort(), pg: await freePort(), s3: await freePort() };
  const { DATABASE_URL: _d, TEMPORAL_ADDRESS: _t, REPOWALK_TASK_QUEUE: _q, ...rest } = process.env;
  env = {
    ...rest,
    REPOWALK_STATE_DIR: stateDir,
    REPOWALK_TEMPORAL_PORT: String(ports.temporal),
    REPOWALK_TEMPORAL_UI_PORT: String(ports.ui),
    REPOWALK_PG_PORT: String(ports.pg),
    REPOWALK_S3_PORT: String(ports.s3),
  };
});

afterAll(async () => {
  // Whatever happened above, leave nothing running.
  if (stateDir) {
    await repowalk(['stack', 'down'], 120_000);
    await rm(stateDir, { recursive: true, force: true });
  }
}, 180_000);

describe('./repowalk stack and demo', () => {
  it('stack up starts every piece on its port, status describes it, down stops it all', async () => {
    const up = await repowalk(['stack', 'up']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toContain(`temporal     127.0.0.1:${ports.temporal}`);
    expect(up.stdout).toContain(`web ui       http://127.0.0.1:${ports.ui}`);
    for (const [what, port] of Object.entries(ports)) expect(await tcpOpen('127.0.0.1', port), what).toBe(true);
    const status = await repowalk(['stack', 'status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`127.0.0.1:${ports.temporal}`);
    const supervisor = Number(/supervisor pid (\d+)/.exec(status.stdout)?.[1]);
    expect(alive(supervisor)).toBe(true);
    // Again: the running stack is reused, not started twice.
    const again = await repowalk(['stack', 'up']);
    expect(again.code).toBe(0);
    expect(Number(/supervisor pid (\d+)/.exec(again.stdout)?.[1])).toBe(supervisor);

    const down = await repowalk(['stack', 'down']);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stdout).toContain('stack stopped');
    expect(alive(supervisor)).toBe(false);
    for (const [what, port] of Object.entries(ports)) expect(await tcpOpen('127.0.0.1', port), what).toBe(false);
    const gone = await repowalk(['stack', 'status']);
    expect(gone.code).toBe(1);
    expect(gone.stdout).toContain(`no stack running in ${stateDir}`);
  }, 15 * 60_000);

  it('demo backfills every repo its PDS lists; run again, every repo is unchanged; stack down stops its worker too', async () => {
    const first = await repowalk(['demo']);
    expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
    const done = /done: (\d+) repos \((\d+) imported, (\d+) unchanged, (\d+) failed → resync, 0 gone, 0 deleted, 0 dropped\), (\d+) records/.exec(first.stdout);
    expect(done, first.stdout).not.toBeNull();
    const [, repos, imported, unchanged, failed, records] = done!.map(Number);
    expect(repos).toBeGreaterThanOrEqual(4);
    expect({ imported, unchanged, failed }).toEqual({ imported: repos, unchanged: 0, failed: 0 });
    expect(records).toBeGreaterThan(5000);
    expect(first.stdout).toMatch(new RegExp(`^mirror +${repos} repos, ${records} records, \\d+ blocks in \\d+ packs? .*, \\d+ blobs, 0 errors$`, 'm'));
    expect(first.stdout).toMatch(/^ping +ping\/\d+: PostgreSQL/m);

    const second = await repowalk(['demo']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('sample accounts already on the PDS');
    expect(second.stdout).toContain(`done: ${repos} repos (0 imported, ${repos} unchanged, 0 failed → resync`);

    const workerPid = Number(await readFile(join(stateDir, 'worker.pid'), 'utf8'));
    expect(alive(workerPid)).toBe(true);
    const down = await repowalk(['stack', 'down']);
    expect(down.code).toBe(0);
    expect(existsSync(join(stateDir, 'worker.pid'))).toBe(false);
    const until = Date.now() + 30_000;
    while (alive(workerPid) && Date.now() < until) await new Promise((r) => setTimeout(r, 250));
    expect(alive(workerPid)).toBe(false);
  }, 30 * 60_000);
});
