// @ts-check
/**
 * `./repowalk` runs the command line from JavaScript, not from the TypeScript sources.
 *
 * Node runs `.ts` files by stripping their types, which loads a WebAssembly build of a
 * TypeScript parser (amaro) into the process the first time a `.ts` module is imported: about
 * 18 MB resident for the life of a process that, once started, never strips anything again. So
 * the types are stripped once, into a tree of `.js` files under the cache directory
 * (`<cacheDir>/js/<key>/`), and the launcher runs `cli/main.js` from there. This file is plain
 * JavaScript for that reason: Node runs it without the stripper.
 *
 * The tree mirrors the checkout. Each `.ts` file but the tests becomes a `.js` file stripped in
 * Node's own 'strip' mode (types replaced by spaces: every line and column is where it was in the
 * `.ts`, so a stack trace's `cli/main.js:12:5` is `cli/main.ts:12:5`), with its relative module
 * specifiers (static and dynamic imports, `new Worker(new URL('./x.ts', import.meta.url))`)
 * pointing at the `.js` files — the same length, so positions hold. Everything else in the
 * checkout, the `.ts` files themselves and `node_modules` are links to the originals: a path
 * built from `import.meta.url` (the migrations, the workflow sources the bundler reads, the
 * launcher) finds what it found before.
 *
 * The key hashes the Node version, the checkout's path, the name of every file and folder
 * mirrored and the text of every `.ts` file stripped; the launcher computes it at each start (a
 * few ms) and, when that tree is missing, builds it in a child process (this file with
 * `--build`, so that the process that runs the command never loads the stripper), writing to a
 * temporary folder renamed into place, so a reader never sees half a tree and concurrent builders
 * do not collide. Building drops trees not used for 30 days.
 *
 *   node scripts/compiled.mjs ARGS…    runs `repowalk ARGS…` from the tree (what ./repowalk does)
 *   node scripts/compiled.mjs --tree   builds the tree if needed and prints its folder
 *   node scripts/compiled.mjs --build  (the child that builds it)
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const FORMAT = 1;
const MAX_IDLE_MS = 30 * 24 * 3600 * 1000;

/** Not mirrored: installed packages (linked once at the top), state and caches, and dot-files. */
const SKIP = new Set(['node_modules', 'test-artifacts']);

/**
 * @typedef {{ kind: 'dir', path: string }
 *   | { kind: 'link', path: string }
 *   | { kind: 'strip', path: string, source: string }} Entry  paths relative to the checkout
 */

/**
 * Every entry of the tree for `root`, folders before what they hold: a folder with no `.ts` file
 * anywhere below is one link; a `.ts` file that is not a test is stripped (and linked too).
 * @param {string} root
 * @returns {Entry[]}
 */
export function treeEntries(root) {
  /** @type {Entry[]} */
  const entries = [];
  /** @param {string} rel @returns {boolean} whether anything below is TypeScript */
  const walk = (rel) => {
    const dir = join(root, rel);
    const names = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    /** @type {Entry[]} */
    const here = [];
    let typescript = false;
    for (const d of names) {
      if (d.name.startsWith('.') || SKIP.has(d.name) || d.name.endsWith('.log')) continue;
      const path = rel === '' ? d.name : `${rel}/${d.name}`;
      if (d.isDirectory()) {
        const at = entries.length;
        entries.push({ kind: 'dir', path });
        if (walk(path)) typescript = true;
        else entries.splice(at, entries.length - at, { kind: 'link', path });
      } else if (d.name.endsWith('.ts') && !d.name.endsWith('.d.ts')) {
        typescript = true;
        here.push({ kind: 'link', path });
        if (!d.name.endsWith('.test.ts')) here.push({ kind: 'strip', path, source: readFileSync(join(root, path), 'utf8') });
      } else {
        here.push({ kind: 'link', path });
      }
    }
    entries.push(...here);
    return typescript;
  };
  walk('');
  return entries;
}

/**
 * @param {string} root
 * @param {Entry[]} entries
 */
export function treeKey(root, entries) {
  const h = createHash('sha256');
  h.update(`repowalk-js-tree ${FORMAT} ${process.version}\n${root}\n`);
  for (const e of entries) h.update(e.kind === 'strip' ? `${e.kind} ${e.path} ${e.source.length}\n${e.source}\n` : `${e.kind} ${e.path}\n`);
  return h.digest('hex').slice(0, 24);
}

/** @param {NodeJS.ProcessEnv} env */
export function cacheDirOf(env) {
  return env.REPOWALK_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'repowalk');
}

/**
 * The tree for the checkout as it is now: its folder, built first (in a child process) if missing.
 * @param {{ root?: string, cacheDir?: string }} [opts]
 * @returns {string}
 */
export function ensureTree(opts = {}) {
  const root = opts.root ?? ROOT;
  const cacheDir = opts.cacheDir ?? cacheDirOf(process.env);
  const dir = join(cacheDir, 'js', treeKey(root, treeEntries(root)));
  if (existsSync(join(dir, 'cli', 'main.js'))) {
    // Marks it used, so a build elsewhere does not prune it from under a running process.
    try {
      const now = new Date();
      utimesSync(dir, now, now);
    } catch {
      // a read-only cache still runs
    }
    return dir;
  }
  const child = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', fileURLToPath(import.meta.url), '--build', root, cacheDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  if (child.status !== 0) throw new Error(`could not build the JavaScript tree of ${root} in ${join(cacheDir, 'js')}: ${(child.stderr || String(child.error ?? `exit ${child.status}`)).trim()}`);
  // Sources edited while it built give the child another key: run what it built.
  return child.stdout.trim();
}

/**
 * Builds the tree of `root` into `<cacheDir>/js/<key>` unless there, and returns that folder.
 * Loads the type stripper: run it in a process of its own (`--build`).
 * @param {string} root
 * @param {string} cacheDir
 */
export async function buildTree(root, cacheDir) {
  const { stripTypeScriptTypes } = await import('node:module');
  const entries = treeEntries(root);
  const dir = join(cacheDir, 'js', treeKey(root, entries));
  if (existsSync(join(dir, 'cli', 'main.js'))) return dir;
  const stripped = new Set(entries.filter((e) => e.kind === 'strip').map((e) => e.path));
  mkdirSync(dirname(dir), { recursive: true });
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    mkdirSync(tmp);
    symlinkSync(join(root, 'node_modules'), join(tmp, 'node_modules'));
    for (const e of entries) {
      const to = join(tmp, e.path);
      if (e.kind === 'dir') mkdirSync(to);
      else if (e.kind === 'link') symlinkSync(join(root, e.path), to);
      else {
        const js = `${e.path.slice(0, -3)}.js`;
        if (existsSync(join(root, js))) throw new Error(`${js} is beside ${e.path}: the tree would have two of it`);
        let code;
        try {
          code = stripTypeScriptTypes(e.source, { mode: 'strip' });
        } catch (err) {
          throw new Error(`${e.path}: ${/** @type {Error} */ (err).message}`);
        }
        writeFileSync(join(tmp, js), toJsSpecifiers(code, e.path, stripped));
      }
    }
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Another process built the same tree first: theirs is the same.
      if (!existsSync(join(dir, 'cli', 'main.js'))) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  pruneIdleTrees(dirname(dir), dir);
  return dir;
}

// A relative specifier ending in .ts where Node loads a module from it: `from '…'`, `import '…'`,
// `import('…')`, `new Worker(new URL('…', import.meta.url)`. Other `.ts` paths (the bundler's
// entry, a script a child process runs) keep naming the `.ts` file, linked in the tree.
const SPECIFIER = /(\bfrom\s*|\bimport\s*\(?\s*|\bnew\s+Worker\s*\(\s*new\s+URL\s*\(\s*)(['"])(\.\.?\/[^'"\n]*?)\.ts\2/g;

/**
 * `code` (a stripped `path`) with its relative specifiers of stripped modules ending in `.js`.
 * @param {string} code
 * @param {string} path
 * @param {Set<string>} stripped
 */
export function toJsSpecifiers(code, path, stripped) {
  return code.replace(SPECIFIER, (whole, before, quote, spec) => {
    const target = posix.join(posix.dirname(path), `${spec}.ts`);
    return stripped.has(target) ? `${before}${quote}${spec}.js${quote}` : whole;
  });
}

/**
 * @param {string} parent
 * @param {string} keep
 */
function pruneIdleTrees(parent, keep) {
  const cutoff = Date.now() - MAX_IDLE_MS;
  for (const name of readdirSync(parent)) {
    const path = join(parent, name);
    if (path === keep) continue;
    try {
      if (statSync(path).mtimeMs < cutoff) rmSync(path, { recursive: true, force: true });
    } catch {
      // gone already
    }
  }
}

// Run as a script (`import.meta.main` is Node ≥ 24.2's; the launcher may run an older Node ≥ 22.18).
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [first, ...rest] = process.argv.slice(2);
  if (first === '--build') {
    const [root, cacheDir] = rest;
    if (!root || !cacheDir) throw new Error('usage: node scripts/compiled.mjs --build ROOT CACHE_DIR');
    console.log(await buildTree(root, cacheDir));
  } else if (first === '--tree') {
    console.log(ensureTree());
  } else {
    let main;
    try {
      main = join(ensureTree(), 'cli', 'main.js');
    } catch (err) {
      console.error(`repowalk: ${/** @type {Error} */ (err).message}`);
      process.exit(1);
    }
    process.argv[1] = main;
    await import(pathToFileURL(main).href);
  }
}
