/**
 * The workflow bundle, built once per content and kept under the cache directory.
 *
 * Bundling runs webpack: seconds of CPU and a few hundred MB of heap that a long-running process
 * never gives back. So the bundle is built in a child process that exits when it is done, and
 * written to `<cacheDir>/workflow-bundles/<key>.js`, where the key hashes everything the bundle is
 * made of — the source of every module the entry reaches through value imports, the versions of
 * the packages they import, and the SDK's — so a worker (or a test worker) that starts on code
 * already bundled reads the file and starts in a fraction of the time and memory. Concurrent
 * builders write to their own temporary file and rename it into place, so a reader never sees
 * half a bundle.
 *
 *   node workers/bundle.ts [ENTRY]   builds (or finds) the bundle and prints its path
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const WORKFLOWS_ENTRY = join(ROOT, 'workflows', 'index.ts');
const BUNDLE_VERSION = 3;

export interface BundleOptions {
  /** The module whose exports are the workflows (default workflows/index.ts). */
  workflowsPath?: string;
  cacheDir: string;
  log?: (line: string) => void;
}

/**
 * The bundle for `workflowsPath`, as `Worker.create` takes it: from the cache, or built now in a
 * child process and cached.
 */
export async function workflowBundle(opts: BundleOptions): Promise<{ codePath: string }> {
  const entry = resolve(opts.workflowsPath ?? WORKFLOWS_ENTRY);
  const codePath = join(opts.cacheDir, 'workflow-bundles', `${bundleKey(entry)}.js`);
  if (existsSync(codePath)) return { codePath };
  opts.log?.(`bundling the workflows into ${codePath} (once for this code)`);
  await buildInChild(entry, codePath);
  return { codePath };
}

/** A hash of every input of the bundle of `entry`. */
export function bundleKey(entry: string): string {
  const h = createHash('sha256');
  h.update(`repowalk-workflow-bundle ${BUNDLE_VERSION}\n`);
  const packages = new Set<string>(['@temporalio/worker', '@temporalio/workflow', '@temporalio/common']);
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    // Named relative to the project (or, outside it, by file name only), so a test's entry in a
    // fresh temporary directory with the same content keys the same bundle.
    const name = file.startsWith(ROOT) ? relative(ROOT, file) : basename(file);
    h.update(`${name}\n${source.length}\n${source}\n`);
    for (const specifier of valueImports(source)) {
      if (specifier.startsWith('.') || isAbsolute(specifier)) queue.push(resolve(dirname(file), specifier));
      else if (!specifier.startsWith('node:')) packages.add(packageName(specifier));
    }
  }
  for (const name of [...packages].sort()) h.update(`${name}@${packageVersion(name)}\n`);
  return h.digest('hex').slice(0, 24);
}

// `import … from '…'`, `export … from '…'`, `import '…'`; not `import type` / `export type`,
// which the bundler erases.
const IMPORT = /^\s*(?:import|export)\s+(?!type\s)(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/gm;

function valueImports(source: string): string[] {
  return [...source.matchAll(IMPORT)].map((m) => m[1]!);
}

function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'absent';
  }
}

function buildInChild(entry: string, codePath: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', fileURLToPath(import.meta.url), '--build', entry, codePath], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolvePromise() : reject(new Error(`bundling the workflows (${entry}) failed with exit code ${code}: ${stderr.trim()}`)),
    );
  });
}

async function build(entry: string, codePath: string): Promise<void> {
  const { bundleWorkflowCode, DefaultLogger } = await import('@temporalio/worker');
  const { code } = await bundleWorkflowCode({
    workflowsPath: entry,
    logger: new DefaultLogger('WARN'),
    // An entry outside the project (a test's) still resolves packages from the project.
    webpackConfigHook: (config) => ({ ...config, resolve: { ...config.resolve, modules: [join(ROOT, 'node_modules'), 'node_modules'] } }),
  });
  await mkdir(dirname(codePath), { recursive: true });
  const tmp = `${codePath}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, oneByteText(withoutSourcesContent(code)));
    await rename(tmp, codePath);
  } finally {
    await rm(tmp, { force: true });
  }
  await pruneOldBundles(dirname(codePath), codePath);
}

const INLINE_MAP = '//# sourceMappingURL=data:';

/**
 * The bundle with its inline source map kept but the sources' text taken out of it.
 *
 * The SDK needs an inline map (it refuses a bundle without one) and builds a source-map consumer
 * from it in the workflow thread, so a workflow's stack trace names the TypeScript file and line.
 * The map's `sourcesContent`, the whole text of every module bundled, is what a debugger would show
 * and nothing else reads: 1.9 MB of the 3 MB bundle, parsed in both threads of every worker.
 */
export function withoutSourcesContent(code: string): string {
  const at = code.lastIndexOf(INLINE_MAP);
  const data = at < 0 ? -1 : code.indexOf('base64,', at);
  if (data < 0) return code;
  const map = JSON.parse(Buffer.from(code.slice(data + 7).trim(), 'base64').toString('utf8')) as Record<string, unknown>;
  delete map.sourcesContent;
  return `${code.slice(0, data + 7)}${Buffer.from(JSON.stringify(map)).toString('base64')}\n`;
}

/**
 * The bundle with every character past U+00FF written as a `\uXXXX` escape, which means the same
 * in a string, a template, a regular expression, an identifier and a comment.
 *
 * V8 keeps a script's text for as long as the script lives, one byte a character when every
 * character fits in one (Latin-1), two otherwise. A few dashes and arrows in comments and messages
 * (65 of 1.6 million characters) made the workflow thread hold the whole bundle at two bytes a
 * character. Columns after an escape on its line move (the source map is not rewritten); lines
 * do not. Left as it is when an escape could mean something else: a backslash before such a
 * character, or a line or paragraph separator (U+2028/9), which ends a line comment.
 */
export function oneByteText(code: string): string {
  if (/\\[^\u0000-\u00ff]|[\u2028\u2029]/u.test(code)) return code;
  return code.replace(/[^\u0000-\u00ff]/gu, (ch) => {
    let out = '';
    for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`;
    return out;
  });
}

/** Every code change leaves a bundle behind: drop those not rebuilt for a month (a running worker has read its own already). */
async function pruneOldBundles(dir: string, keep: string): Promise<void> {
  const cutoff = Date.now() - 30 * 24 * 3600 * 1000;
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    if (path === keep) continue;
    const info = await stat(path).catch(() => undefined);
    if (info && info.mtimeMs < cutoff) await rm(path, { force: true });
  }
}

if (import.meta.main) {
  if (process.argv[2] === '--build') {
    await build(process.argv[3]!, process.argv[4]!);
  } else {
    const { loadConfig } = await import('../config/load.ts');
    const { codePath } = await workflowBundle({ workflowsPath: process.argv[2], cacheDir: loadConfig().cacheDir, log: (l) => console.error(l) });
    console.log(codePath);
  }
}
