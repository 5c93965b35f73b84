/**
 * Blob mirroring: the blobs that kept records reference are fetched with
 * `com.atproto.sync.getBlob`, checked against their CID, and stored one object per CID. A blob
 * the PDS cannot give, or gives wrong, is recorded as missing with the reason: never fatal to
 * the import, and visible to the walker.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { blobKey, verifyContent } from '../storage/keys.ts';
import type { VerifiedRepo } from '../atproto/verify.ts';
import { extractRefs } from '../atproto/refs.ts';
import { getBlob, type Politeness } from '../atproto/net/index.ts';
import { collectionFilter, type FilterOptions } from './filters.ts';

export interface BlobMirrorInput {
  did: string;
  pds: string;
  repo: VerifiedRepo;
  filter: FilterOptions;
  politeness: Politeness;
  allowPrivate: boolean;
  timeoutMs: number;
  signal?: AbortSignal;
  maxBlobBytes?: number;
}

/** CIDs of the blobs the kept records of `repo` reference. */
export function referencedBlobs(repo: VerifiedRepo, filter: FilterOptions): Map<string, { mime: string | undefined; size: number | undefined }> {
  const keep = collectionFilter(filter);
  const out = new Map<string, { mime: string | undefined; size: number | undefined }>();
  for (const rec of repo.records) {
    if (!keep.keeps(rec.collection)) continue;
    const bytes = repo.blocks.get(rec.cid);
    if (!bytes) continue;
    for (const b of extractRefs(bytes).blobs) if (!out.has(b.cid)) out.set(b.cid, { mime: b.mimeType, size: b.size });
  }
  return out;
}

export async function mirrorBlobs(stores: { pool: pg.Pool; blobs: BlobStore }, input: BlobMirrorInput): Promise<{ stored: number; missing: number }> {
  const wanted = referencedBlobs(input.repo, input.filter);
  if (wanted.size === 0) return { stored: 0, missing: 0 };
  const { rows } = await stores.pool.query<{ cid: string }>(`SELECT cid FROM blobs WHERE status = 'present' AND cid = ANY($1::text[])`, [[...wanted.keys()]]);
  const present = new Set(rows.map((r) => r.cid));
  let stored = 0;
  let missing = 0;
  for (const [cid, meta] of wanted) {
    if (present.has(cid)) continue;
    const key = blobKey(cid);
    try {
      const bytes = await getBlob(input.pds, input.did, cid, {
        maxBytes: input.maxBlobBytes ?? 100 * 1024 * 1024,
        timeoutMs: input.timeoutMs,
        politeness: input.politeness,
        allowPrivate: input.allowPrivate,
        ...(input.signal ? { signal: input.signal } : {}),
      });
      const check = verifyContent(key, bytes);
      if (!check.ok) throw new Error(`bytes do not match the CID: ${check.reason}`);
      await stores.blobs.put(key, bytes);
      await stores.pool.query(
        `INSERT INTO blobs (cid, did, size, mime, status, key) VALUES ($1, $2, $3, $4, 'present', $5)
         ON CONFLICT (cid) DO UPDATE SET status = 'present', key = $5, size = $3, last_error = NULL, updated_at = now()`,
        [cid, input.did, bytes.length, meta.mime ?? null, key],
      );
      stored++;
    } catch (err) {
      if (input.signal?.aborted) throw err;
      await stores.pool.query(
        `INSERT INTO blobs (cid, did, size, mime, status, last_error) VALUES ($1, $2, $3, $4, 'missing', $5)
         ON CONFLICT (cid) DO UPDATE SET last_error = $5, updated_at = now() WHERE blobs.status = 'missing'`,
        [cid, input.did, meta.size ?? null, meta.mime ?? null, String((err as Error).message).slice(0, 2000)],
      );
      missing++;
    }
  }
  return { stored, missing };
}
