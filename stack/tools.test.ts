import { describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync, existsSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cachedToolPath, ensureGoTool, type GoTool } from './tools.ts';

const FAKE: GoTool = { name: 'faketool', module: 'example.invalid/faketool', version: 'v0.0.1', envOverride: 'REPOWALK_FAKETOOL_BIN' };

describe('ensureGoTool', () => {
  it('returns a cached binary without building, on a cache whose tool folder did not exist before', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'repowalk-tools-'));
    const target = cachedToolPath(cache, FAKE);
    mkdirSync(join(target, '..'), { recursive: true });
    writeFileSync(target, '#!/bin/sh\n');
    chmodSync(target, 0o755);
    expect(await ensureGoTool(cache, FAKE)).toBe(target);
  });

  it('on an empty cache, tries to build (and says what failed) instead of waiting on a lock forever', async () => {
    const cache = join(mkdtempSync(join(tmpdir(), 'repowalk-tools-')), 'fresh');
    // No such module exists: go install fails fast, offline or not; with no Go at all it fails too.
    const err = await ensureGoTool(cache, FAKE).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/go install example\.invalid\/faketool@v0\.0\.1 failed|needs Go/);
    expect(existsSync(`${cachedToolPath(cache, FAKE)}.lock`)).toBe(false);
  }, 120_000);

  it('takes over a stale lock left by a builder that died', async () => {
    const cache = mkdtempSync(join(tmpdir(), 'repowalk-tools-'));
    const lock = `${cachedToolPath(cache, FAKE)}.lock`;
    mkdirSync(lock, { recursive: true });
    const old = new Date(Date.now() - 3600_000);
    utimesSync(lock, old, old);
    const lines: string[] = [];
    const err = await ensureGoTool(cache, FAKE, (l) => lines.push(l)).catch((e: Error) => e);
    expect(lines.some((l) => l.includes('stale build lock'))).toBe(true);
    expect((err as Error).message).toMatch(/failed|needs Go/);
  }, 120_000);
});
