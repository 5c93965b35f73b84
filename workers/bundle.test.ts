import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { access, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleKey, oneByteText, workflowBundle } from './bundle.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'repowalk-bundle-'));
  await writeFile(join(dir, 'greeting.ts'), `export const greeting = 'hello';\n`);
  await writeFile(join(dir, 'shapes.ts'), `export interface Shape { sides: number }\n`);
  await writeFile(
    join(dir, 'workflows.ts'),
    `import { greeting } from './greeting.ts';\nimport type { Shape } from './shapes.ts';\n` +
      `export async function greet(name: string, _s?: Shape): Promise<string> { return greeting + ' ' + name; }\n`,
  );
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('workflow bundle cache', () => {
  it('keys the bundle by the source it is made of, not by type-only imports', async () => {
    const entry = join(dir, 'workflows.ts');
    const before = bundleKey(entry);
    expect(bundleKey(entry)).toBe(before);
    await writeFile(join(dir, 'shapes.ts'), `export interface Shape { sides: number; name: string }\n`);
    expect(bundleKey(entry)).toBe(before);
    await writeFile(join(dir, 'greeting.ts'), `export const greeting = 'hi';\n`);
    const after = bundleKey(entry);
    expect(after).not.toBe(before);
    await writeFile(join(dir, 'greeting.ts'), `export const greeting = 'hello';\n`);
    expect(bundleKey(entry)).toBe(before);
  });

  it('builds once in a child process, then serves the cached file', async () => {
    const cacheDir = join(dir, 'cache');
    const entry = join(dir, 'workflows.ts');
    const logs: string[] = [];
    const first = await workflowBundle({ workflowsPath: entry, cacheDir, log: (l) => logs.push(l) });
    expect(first.codePath).toBe(join(cacheDir, 'workflow-bundles', `${bundleKey(entry)}.js`));
    const code = await readFile(first.codePath, 'utf8');
    expect(code).toContain("'hello'");
    // The inline source map still maps the bundle to its modules, without their text.
    const map = JSON.parse(Buffer.from(code.slice(code.lastIndexOf('base64,') + 7).trim(), 'base64').toString('utf8'));
    expect(map.sources.some((s: string) => s.endsWith('greeting.ts'))).toBe(true);
    expect(map.mappings.length).toBeGreaterThan(0);
    expect(map.sourcesContent).toBeUndefined();
    expect(logs).toHaveLength(1);
    const built = (await stat(first.codePath)).mtimeMs;
    const again = await workflowBundle({ workflowsPath: entry, cacheDir, log: (l) => logs.push(l) });
    expect(again.codePath).toBe(first.codePath);
    expect(logs).toHaveLength(1); // nothing bundled the second time
    expect((await stat(again.codePath)).mtimeMs).toBe(built);
    // Changed code gets a bundle of its own; building it drops bundles untouched for a month.
    const old = join(cacheDir, 'workflow-bundles', 'old.js');
    await writeFile(old, '// a bundle of code long gone');
    const monthsAgo = new Date(Date.now() - 40 * 24 * 3600 * 1000);
    await utimes(old, monthsAgo, monthsAgo);
    await writeFile(join(dir, 'greeting.ts'), `export const greeting = 'bonjour';\n`);
    const changed = await workflowBundle({ workflowsPath: entry, cacheDir });
    expect(changed.codePath).not.toBe(first.codePath);
    expect(await readFile(changed.codePath, 'utf8')).toContain("'bonjour'");
    await expect(access(old)).rejects.toThrow(/ENOENT/);
    await expect(access(first.codePath)).resolves.toBeUndefined();
  }, 120_000);

  it('writes the bundle in one-byte characters, meaning the same', async () => {
    const source = [
      `// a comment — with an arrow → and an ellipsis …`,
      `const dash = '—', tpl = \`→ \${dash} …\`, emoji = '😀';`,
      `const found = /[→—]+/u.exec('a→—b')[0] + /😀/.test('x😀') + /\\u2014/.test('—');`,
      `/* block — */ const café = 'ok';`,
      `[dash, tpl, emoji, found, café, emoji.length]`,
    ].join('\n');
    const written = oneByteText(source);
    expect(written).not.toBe(source);
    expect(/[^\u0000-\u00ff]/.test(written)).toBe(false);
    expect((0, eval)(written)).toEqual((0, eval)(source));
    // Where an escape could change the meaning, the text is left as it is.
    for (const risky of [`'\\—'`, `// a\u2028'b'`]) expect(oneByteText(risky)).toBe(risky);

    const entry = join(dir, 'arrows.ts');
    await writeFile(entry, `export async function arrow(): Promise<string> { return 'a → b — c'; }\n`);
    const { codePath } = await workflowBundle({ workflowsPath: entry, cacheDir: join(dir, 'cache') });
    const code = await readFile(codePath, 'utf8');
    expect(/[^\u0000-\u00ff]/.test(code)).toBe(false);
    expect(code).toContain(`'a \\u2192 b \\u2014 c'`);
  }, 120_000);

  it('says which entry failed to bundle', async () => {
    const broken = join(dir, 'broken.ts');
    await writeFile(broken, `export { nothing } from './missing-module.ts';\n`);
    // The key cannot be computed for a module that is not there: the error names it.
    await expect(workflowBundle({ workflowsPath: broken, cacheDir: join(dir, 'cache') })).rejects.toThrow(/missing-module\.ts/);
  });
});
