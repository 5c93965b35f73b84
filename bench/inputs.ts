/**
 * What the benches feed the code: repos under a DID the project's own check accepts, so a bench
 * runs the path a real backfill runs (a DID the check refuses would never reach the importer).
 */
import { Did } from '../backfill/settings.ts';
import { type MadeRepo, makeRepoCached } from '../atproto/testing/make-repo.ts';

/** did:plc + 24 characters of base32 (a-z, 2-7), as PLC mints them. */
export const BENCH_DID = Did.parse('did:plc:repowalkbenchrepoaaaaaaa');

/** The signed `records`-record repo the verify and import benches share (cached on disk). */
export function benchRepo(records: number): Promise<MadeRepo> {
  return makeRepoCached({ did: BENCH_DID, records });
}
