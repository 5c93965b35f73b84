/**
 * The stack's Go-built servers, cached outside the repo and keyed by version: a binary is
 * taken from an explicit path, else from the cache, else built once with `go install` from the
 * Go module proxy (the only place this machine can reach). Concurrent callers share one build.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface GoTool {
  name: string;
  module: string;
  version: string;
  /** Environment variable that points at a prebuilt binary instead. */
  envOverride: string;
  /** The file `go install` writes, when it is not `name` (the last element of the package path). */
  binary?: string;
}

/** Temporal CLI v1.5.1: the newest tag `go install` can build (DESIGN.md); bundles server 1.29.1 and the Web UI. */
export const TEMPORAL_CLI: GoTool = {
  name: 'temporal',
  module: 'github.com/temporalio/cli/cmd/temporal',
  version: 'v1.5.1',
  envOverride: 'REPOWALK_TEMPORAL_BIN',
};

export const VERSITYGW: GoTool = {
  name: 'versitygw',
  module: 'github.com/versity/versitygw/cmd/versitygw',
  version: 'v1.7.0',
  envOverride: 'REPOWALK_VERSITYGW_BIN',
};

/**
 * The real Temporal server, for the stack's `REPOWALK_TEMPORAL=server` mode (PostgreSQL
 * persistence and SQL visibility): the same server version the CLI above bundles.
 */
export const TEMPORAL_SERVER: GoTool = {
  name: 'temporal-server',
  module: 'go.temporal.io/server/cmd/server',
  version: 'v1.29.1',
  envOverride: 'REPOWALK_TEMPORAL_SERVER_BIN',
  binary: 'server',
};

/** temporal-sql-tool of the same release: creates and migrates the server's databases (schemas embedded). */
export const TEMPORAL_SQL_TOOL: GoTool = {
  name: 'temporal-sql-tool',
  module: 'go.temporal.io/server/cmd/tools/sql',
  version: 'v1.29.1',
  envOverride: 'REPOWALK_TEMPORAL_SQL_TOOL_BIN',
  binary: 'sql',
};

/** The Web UI server the CLI v1.5.1 embeds (same version, assets included), run standalone against the server. */
export const TEMPORAL_UI_SERVER: GoTool = {
  name: 'temporal-ui-server',
  module: 'github.com/temporalio/ui-server/v2/cmd/server',
  version: 'v2.42.1',
  envOverride: 'REPOWALK_TEMPORAL_UI_BIN',
  binary: 'server',
};

/** A build takes minutes; a lock this old was left by a builder that died. */
const STALE_LOCK_MS = 30 * 60_000;

export function cachedToolPath(cacheDir: string, tool: GoTool): string {
  return join(cacheDir, `${tool.name}-${tool.version}`, tool.name);
}

/** Path of a runnable binary of `tool`, building it into the cache when missing. */
export async function ensureGoTool(cacheDir: string, tool: GoTool, log: (line: string) => void = () => {}): Promise<string> {
  const override = process.env[tool.envOverride];
  if (override) {
    if (!existsSync(override)) throw new Error(`${tool.envOverride}=${override}: no such file`);
    return override;
  }
  const target = cachedToolPath(cacheDir, tool);
  if (existsSync(target)) return target;

  const lockDir = `${target}.lock`;
  await mkdir(dirname(target), { recursive: true });
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Another process is building it: wait for the binary. A lock older than any build
      // (a builder that was killed) is broken and taken over.
      if (existsSync(target)) return target;
      const age = Date.now() - (await stat(lockDir).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > STALE_LOCK_MS) {
        log(`removing a stale build lock ${lockDir} (${Math.round(age / 1000)} s old)`);
        await rm(lockDir, { recursive: true, force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    if (existsSync(target)) return target;
    const gobin = await mkdtemp(join(cacheDir, `.build-${tool.name}-`));
    log(`building ${tool.name} ${tool.version} with go install (once; cached in ${target})`);
    const started = Date.now();
    try {
      await run('go', ['install', `${tool.module}@${tool.version}`], {
        env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0', GOFLAGS: '-mod=mod', GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? 'auto' },
        maxBuffer: 64 * 1024 * 1024,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error(`building ${tool.name} needs Go (>= 1.25) on PATH; or set ${tool.envOverride} to a built binary`);
      throw new Error(`go install ${tool.module}@${tool.version} failed:\n${(e.stderr ?? '').slice(-4000)}`);
    }
    await rename(join(gobin, tool.binary ?? tool.name), target);
    await rm(gobin, { recursive: true, force: true });
    log(`built ${tool.name} ${tool.version} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    return target;
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}
