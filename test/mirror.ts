/**
 * Test and benchmark mirrors: real signed repos (`atproto/testing/make-repo.ts`), verified and
 * stored by the real importer, so the walker is tested on what backfill writes.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { importRepo } from '../backfill/import.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { type MadeRepo, makeRepoCached } from '../atproto/testing/make-repo.ts';

export interface MirrorRepoSpec {
  did: string;
  records: number;
}

/** Builds (or reads from the test-repo cache), verifies and imports each repo; returns them in order. */
export async function buildMirror(deps: { pool: pg.Pool; blobs: BlobStore }, repos: readonly MirrorRepoSpec[]): Promise<MadeRepo[]> {
  const made: MadeRepo[] = [];
  for (const spec of repos) {
    const repo = await makeRepoCached({ did: spec.did, records: spec.records });
    const verified = await verifyRepo(repo.car, { did: repo.did, signingKey: repo.signingKey });
    const result = await importRepo(deps, {
      repo: verified,
      pds: 'https://pds.invalid',
      handle: undefined,
      signingKey: repo.signingKey,
      filter: { mode: 'full', include: [], exclude: [], signal: [] },
    });
    if (result.kind !== 'imported') throw new Error(`import of ${spec.did} gave ${result.kind}`);
    made.push(repo);
  }
  return made;
}

/** `count` distinct test DIDs (did:plc, 24 base32 characters) with a tag. */
export function testDids(tag: string, count: number): string[] {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  const t = (tag.toLowerCase().replace(/[^a-z2-7]/g, '') + 'w'.repeat(16)).slice(0, 16);
  const b32 = (n: number) => Array.from({ length: 8 }, (_, k) => alphabet[Math.floor(n / 32 ** (7 - k)) % 32]).join('');
  return Array.from({ length: count }, (_, i) => `did:plc:${t}${b32(i)}`);
}
