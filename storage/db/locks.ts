/**
 * Advisory lock keys shared by writers that must not interleave, or that readers must be able to
 * see. GC holds `GC_LOCK_KEY` exclusively while it deletes or re-points block index rows; an
 * import holds it shared for its transaction, so that a block it found indexed cannot be swept
 * before it commits. Every transaction that inserts events holds `EVENT_WRITER_LOCK_KEY` shared
 * from its BEGIN (storage/event-horizon.ts), so that the event stream can tell which event ids
 * may still commit.
 */
import { createHash } from 'node:crypto';

export const GC_LOCK_KEY = createHash('sha256').update('repowalk:gc:sweep').digest().readBigInt64BE(0);
export const EVENT_WRITER_LOCK_KEY = createHash('sha256').update('repowalk:events:writer').digest().readBigInt64BE(0);
