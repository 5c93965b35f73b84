/**
 * Advisory lock keys shared by writers that must not interleave. GC holds `GC_LOCK_KEY`
 * exclusively while it deletes or re-points block index rows; an import holds it shared for its
 * transaction, so that a block it found indexed cannot be swept before it commits.
 */
import { createHash } from 'node:crypto';

export const GC_LOCK_KEY = createHash('sha256').update('repowalk:gc:sweep').digest().readBigInt64BE(0);
