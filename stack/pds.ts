/**
 * A real reference PDS (`@atproto/pds`) and PLC directory (`@did-plc/server`, in memory) on
 * loopback: the demo's data source (`repowalk stack up` with REPOWALK_STACK_PDS) and the tests'
 * PDS. Filling it and reading it back is the tests' business (`test/xrpc.ts`,
 * `test/pds-fixtures.ts`, `test/pds-seed.ts`).
 *
 * The PDS needs better-sqlite3, which aborts on Node 24, so it runs as a child process on
 * Node 22 with its own dependencies: `stack/pds-server/ensure.sh` provisions both (cached under
 * $REPOWALK_CACHE_DIR, idempotent; the first run on an empty cache takes about 1.5 min) and
 * `stack/pds-server/server.mjs` runs the servers.
 *
 *   const pds = await startPds({ dataDir });
 *   …
 *   await pds.stop();
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const ENSURE_SCRIPT = fileURLToPath(new URL('./pds-server/ensure.sh', import.meta.url));

export interface PdsRuntime {
  /** Node 22 binary. */
  node: string;
  /** server.mjs, next to its node_modules. */
  server: string;
  dir: string;
}

let runtime: Promise<PdsRuntime> | undefined;

/**
 * Provisions Node 22 and the PDS's dependencies (once per process; ensure.sh itself is
 * idempotent and locks against concurrent callers). Progress is written to stderr.
 */
export function ensurePdsRuntime(opts: { timeoutMs?: number } = {}): Promise<PdsRuntime> {
  runtime ??= runEnsure(opts.timeoutMs ?? 15 * 60_000).catch((err: unknown) => {
    runtime = undefined;
    throw err;
  });
  return runtime;
}

async function runEnsure(timeoutMs: number): Promise<PdsRuntime> {
  const child = spawn('bash', [ENSURE_SCRIPT], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv({}),
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    err += s;
    process.stderr.write(s);
  });
  const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
  try {
    const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
    if (code !== 0) {
      throw new Error(
        `stack/pds-server/ensure.sh failed (${signal ?? `exit ${code}`}${signal === 'SIGTERM' ? `, timeout ${timeoutMs} ms` : ''}):\n${tail(err)}`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
  const line = out.trim().split('\n').pop() ?? '';
  const parsed = JSON.parse(line) as PdsRuntime;
  return parsed;
}

/** The environment for the Node 22 children: no NODE_OPTIONS (a Node 24 / vitest loader would
 *  break Node 22) and no PDS_* or LOG_* settings inherited by accident. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('PDS_') || k.startsWith('LOG_') || k.startsWith('VITEST')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function tail(s: string, max = 4000): string {
  return s.length > max ? `…${s.slice(-max)}` : s;
}

export interface StartPdsOptions {
  /** Where the PDS keeps its SQLite files, blobs, secrets and the PLC's operation log. An
   *  existing directory is reused: same accounts, DIDs, admin password (and ports if free). */
  dataDir: string;
  /** Fixed ports (default: the ones last used with this dataDir when free, else free ones). */
  pdsPort?: number;
  plcPort?: number;
  /** Admin password (default: $REPOWALK_PDS_ADMIN_PASSWORD, else the one kept in
   *  dataDir/secrets.json, else a random one). */
  adminPassword?: string;
  /** Extra environment for the PDS, e.g. { PDS_RATE_LIMITS_ENABLED: 'true' }. */
  env?: Record<string, string>;
  /** How long to wait for the ready line once provisioning is done (default 60 s). */
  readyTimeoutMs?: number;
  /** Copy the child's stderr to ours and turn on the servers' logs (default: REPOWALK_PDS_LOG=1). */
  log?: boolean;
}

export interface PdsServer {
  /** http://127.0.0.1:P — use this to talk to the PDS. */
  pdsUrl: string;
  /** http://127.0.0.1:Q — the PLC directory (GET /<did> returns the DID document). */
  plcUrl: string;
  /** http://localhost:P — what the DID documents name as the PDS endpoint. */
  publicUrl: string;
  adminPassword: string;
  dataDir: string;
  pid: number;
  /** What the child wrote on stderr so far (last 64 KiB). */
  stderr(): string;
  /** SIGTERM, wait for a clean exit (SIGKILL after 15 s). Idempotent. */
  stop(): Promise<void>;
}

interface ReadyLine {
  pds: string;
  plc: string;
  adminPassword: string;
  publicUrl: string;
  dataDir: string;
}

/** Starts the PDS and the PLC (provisioning them first if needed); resolves when both answer. */
export async function startPds(opts: StartPdsOptions): Promise<PdsServer> {
  const rt = await ensurePdsRuntime();
  const log = opts.log ?? process.env.REPOWALK_PDS_LOG === '1';
  const args = [rt.server, '--data-dir', opts.dataDir, '--watch-stdin'];
  if (opts.pdsPort !== undefined) args.push('--pds-port', String(opts.pdsPort));
  if (opts.plcPort !== undefined) args.push('--plc-port', String(opts.plcPort));
  const extra: Record<string, string> = { ...(opts.env ?? {}) };
  const adminPassword = opts.adminPassword ?? process.env.REPOWALK_PDS_ADMIN_PASSWORD;
  if (adminPassword) extra.PDS_ADMIN_PASSWORD = adminPassword;
  if (log) extra.LOG_ENABLED ??= 'true';
  const child = spawn(rt.node, args, { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv(extra) });

  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr = (stderr + s).slice(-65536);
    if (log) process.stderr.write(s);
  });
  // If this process dies, the child sees stdin close and shuts down (--watch-stdin).
  child.stdin!.on('error', () => {});
  const onExit = () => child.kill('SIGTERM');
  process.once('exit', onExit);

  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let ready: ReadyLine;
  try {
    ready = await waitForReady(child, exited, opts.readyTimeoutMs ?? 60_000, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    process.removeListener('exit', onExit);
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    pdsUrl: ready.pds,
    plcUrl: ready.plc,
    publicUrl: ready.publicUrl,
    adminPassword: ready.adminPassword,
    dataDir: ready.dataDir,
    pid: child.pid!,
    stderr: () => stderr,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(killer);
        }
        process.removeListener('exit', onExit);
      })();
      return stopping;
    },
  };
}

async function waitForReady(
  child: ChildProcess,
  exited: Promise<[number | null, string | null]>,
  timeoutMs: number,
  stderr: () => string,
): Promise<ReadyLine> {
  let buf = '';
  let onData: ((s: string) => void) | undefined;
  const line = new Promise<ReadyLine>((resolve, reject) => {
    onData = (s: string) => {
      buf += s;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const l = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!l.startsWith('{')) continue;
        try {
          const v = JSON.parse(l) as ReadyLine;
          if (typeof v.pds === 'string' && typeof v.plc === 'string') resolve(v);
        } catch (err) {
          reject(new Error(`pds-server printed a bad ready line: ${l} (${String(err)})`));
        }
      }
    };
    child.stdout!.setEncoding('utf8').on('data', onData);
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      line,
      exited.then(([code, signal]) => {
        throw new Error(`pds-server exited before it was ready (${signal ?? `exit ${code}`}):\n${tail(stderr())}`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`pds-server not ready after ${timeoutMs} ms:\n${tail(stderr())}`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    // Keep draining stdout so the child never blocks on a full pipe.
    if (onData) child.stdout!.removeListener('data', onData);
    child.stdout!.resume();
  }
}
