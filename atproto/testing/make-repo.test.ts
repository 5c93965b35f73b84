import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyRepoCar } from '@atproto/repo';
import { cachePaths, makeRepo, makeRepoCached } from './make-repo.ts';

describe('makeRepo', () => {
  it('builds a repo the reference implementation verifies, with the records it reports', async () => {
    const repo = await makeRepo({ records: 120 });
    const verified = await verifyRepoCar(repo.car, repo.did, repo.signingKey);
    expect(verified.creates.map((c) => `${c.collection}/${c.rkey} ${c.cid.toString()}`).sort()).toEqual(
      repo.records.map((r) => `${r.path} ${r.cid}`).sort(),
    );
    expect(new Set(repo.records.map((r) => r.collection)).size).toBe(4);
    expect(verified.commit.cid.toString()).toBe(repo.commitCid);
  });

  it('is deterministic for the same key', async () => {
    const a = await makeRepo({ records: 30 });
    const b = await makeRepo({ records: 30, keypair: a.keypair });
    expect(Buffer.from(b.car).equals(Buffer.from(a.car))).toBe(true);
  });

  it('caches by parameters, key included', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'repowalk-make-repo-'));
    const saved = process.env.REPOWALK_CACHE_DIR;
    process.env.REPOWALK_CACHE_DIR = dir;
    try {
      const first = await makeRepoCached({ records: 25, keyType: 'p256' });
      expect(existsSync(cachePaths({ records: 25, keyType: 'p256' }).carPath)).toBe(true);
      const second = await makeRepoCached({ records: 25, keyType: 'p256' });
      expect(Buffer.from(second.car).equals(Buffer.from(first.car))).toBe(true);
      expect(second.records).toEqual(first.records);
      expect(second.keypair.did()).toBe(first.signingKey);
      await verifyRepoCar(second.car, second.did, second.signingKey);
    } finally {
      if (saved === undefined) delete process.env.REPOWALK_CACHE_DIR;
      else process.env.REPOWALK_CACHE_DIR = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
