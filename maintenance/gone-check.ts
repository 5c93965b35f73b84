/**
 * The gone re-check's question, asked without downloading the repo: is a gone repo (deactivated,
 * taken down, suspended) active again? One `com.atproto.sync.getRepoStatus` to the PDS its DID
 * document names answers it. Only a repo the PDS calls active again, or one whose answer is not
 * a plain "still inactive" (not found, an error, an unknown reason), goes to backfill, which
 * knows what each of those means; a repo still inactive stays gone with its next re-check time
 * moved on (and an account event only when its reason changed).
 */
import type pg from 'pg';
import { NetError, type RepoStatus } from '../atproto/net/index.ts';
import { markGone, type GoneStatus } from '../backfill/repo-state.ts';

export type GoneVerdict =
  | { did: string; verdict: 'active' }
  | { did: string; verdict: 'still-gone'; status: GoneStatus }
  | { did: string; verdict: 'backfill'; reason: string };

export interface GoneCheckDeps {
  pool: pg.Pool;
  /** getRepoStatus at the DID's current PDS (resolving the DID first). */
  repoStatus: (did: string) => Promise<RepoStatus>;
  /** When a repo still gone is asked again. */
  recheckSeconds: number;
  /** Called before each repo (the activity heartbeats). */
  onRepo?: (did: string) => void;
}

const GONE: readonly string[] = ['deactivated', 'takendown', 'suspended'] satisfies GoneStatus[];

/** Asks about each repo in turn; a repo still gone is recorded so before the next is asked. */
export async function recheckGone(deps: GoneCheckDeps, dids: string[]): Promise<GoneVerdict[]> {
  const out: GoneVerdict[] = [];
  for (const did of dids) {
    deps.onRepo?.(did);
    let status: RepoStatus;
    try {
      status = await deps.repoStatus(did);
    } catch (err) {
      if (!(err instanceof NetError)) throw err;
      out.push({ did, verdict: 'backfill', reason: `getRepoStatus: ${err.message}` });
      continue;
    }
    if (status.active) {
      out.push({ did, verdict: 'active' });
    } else if (status.status !== undefined && GONE.includes(status.status)) {
      const gone = status.status as GoneStatus;
      await markGone(deps.pool, did, { status: gone, recheckAt: new Date(Date.now() + deps.recheckSeconds * 1000), detail: `getRepoStatus: ${gone} (gone re-check)` });
      out.push({ did, verdict: 'still-gone', status: gone });
    } else {
      out.push({ did, verdict: 'backfill', reason: `getRepoStatus: inactive, status ${JSON.stringify(status.status ?? null)}` });
    }
  }
  return out;
}
