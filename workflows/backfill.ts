/**
 * `backfill`: the bulk path over a source of repos (a list of DIDs, a file of DIDs, or every repo
 * a PDS lists). Pages of DIDs are imported many per activity, with bounded concurrency, so a
 * full-network backfill does not cost a workflow history per healthy repo; a repo that fails
 * hands over to its own `backfillRepo` workflow (`backfill/<did>`), which owns its backoff.
 * The source cursor and running totals live in workflow state; long runs continue-as-new.
 */
import {
  condition,
  continueAsNew,
  defineQuery,
  isCancellation,
  proxyActivities,
  setHandler,
  startChild,
  upsertSearchAttributes,
  setCurrentDetails,
  workflowInfo,
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { z } from 'zod';
import type { BackfillActivities } from '../activities/backfill.ts';
import { BackfillSettings, Did, type RepoOutcome } from '../backfill/settings.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';
import { backfillRepo } from './backfill-repo.ts';
import { handleControl } from './control.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

export const BackfillSource = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('dids'), dids: z.array(Did).min(1) }),
  z.object({ kind: z.literal('file'), path: z.string().min(1) }),
  z.object({ kind: z.literal('pds'), url: z.string().url() }),
]);

export const BackfillTotals = z.object({
  repos: z.number().default(0),
  imported: z.number().default(0),
  skipped: z.number().default(0),
  failed: z.number().default(0),
  gone: z.number().default(0),
  deleted: z.number().default(0),
  dropped: z.number().default(0),
  records: z.number().default(0),
  blocks: z.number().default(0),
  bytes: z.number().default(0),
  /** Entries of a PDS's listing skipped for a bad DID or shape. */
  invalidListed: z.number().default(0),
});
export type BackfillTotals = z.output<typeof BackfillTotals>;

export const BackfillInput = z.object({
  source: BackfillSource,
  settings: BackfillSettings.default(BackfillSettings.parse({})),
  /** DIDs per activity. */
  pageSize: z.number().int().min(1).max(1000).default(100),
  /** Repos imported at once inside one activity. */
  concurrency: z.number().int().min(1).max(64).default(8),
  /** Where the source left off (list index, file line, or listRepos cursor); set by continue-as-new. */
  cursor: z.union([z.string(), z.number()]).optional(),
  totals: BackfillTotals.default(BackfillTotals.parse({})),
});
export type BackfillInput = z.input<typeof BackfillInput>;

export interface BackfillProgress {
  state: 'running' | 'paused' | 'done' | 'cancelled';
  source: string;
  cursor: string | number | undefined;
  totals: BackfillTotals;
  /** DIDs handed to their own backfillRepo workflow. */
  handedOver: number;
}

export const backfillProgressQuery = defineQuery<BackfillProgress>('progress');

const acts = proxyActivities<BackfillActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

/** Pages before continue-as-new: each page costs a handful of history events. */
const PAGES_PER_RUN = 200;

function addOutcome(t: BackfillTotals, o: RepoOutcome): void {
  t.repos += 1;
  switch (o.kind) {
    case 'imported':
      t.imported += 1;
      t.records += o.created + o.updated + o.unchanged;
      t.blocks += o.newBlocks;
      t.bytes += o.packBytes;
      break;
    case 'skipped':
      t.skipped += 1;
      break;
    case 'retry':
      t.failed += 1;
      break;
    case 'gone':
      t.gone += 1;
      break;
    case 'deleted':
      t.deleted += 1;
      break;
    case 'dropped':
      t.dropped += 1;
      break;
  }
}

export async function backfill(rawInput: BackfillInput): Promise<BackfillProgress> {
  const input = parseInput(BackfillInput, rawInput, 'backfill');
  const totals = { ...input.totals };
  let cursor = input.cursor;
  let paused = false;
  let cancelled = false;
  let handedOver = 0;
  let state: BackfillProgress['state'] = 'running';
  const sourceLabel = input.source.kind === 'dids' ? `${input.source.dids.length} DIDs` : input.source.kind === 'file' ? `file ${input.source.path}` : `PDS ${input.source.url}`;
  const progress = (): BackfillProgress => ({ state: paused && state === 'running' ? 'paused' : state, source: sourceLabel, cursor, totals, handedOver });
  handleControl({
    pause: () => void (paused = true),
    resume: () => void (paused = false),
    cancel: () => void (cancelled = true),
  });
  setHandler(backfillProgressQuery, progress);
  const show = (s: string) => {
    upsertSearchAttributes([{ key: RepowalkKind, value: 'backfill-bulk' }, { key: RepowalkState, value: s }]);
    // What the Web UI shows as this workflow's current details.
    const t = totals;
    setCurrentDetails(
      `**backfill of ${sourceLabel}: ${s}**\n\n${t.repos} repos: ${t.imported} imported, ${t.skipped} unchanged, ${t.failed} handed to resync, ` +
        `${t.gone} gone, ${t.deleted} deleted, ${t.dropped} dropped; ${t.records} records, ${t.blocks} new blocks`,
    );
  };
  show('running');

  try {
    for (let page = 0; ; page++) {
      if (paused) {
        show('paused');
        await condition(() => !paused || cancelled);
        if (!cancelled) show('running');
      }
      if (cancelled) break;
      if (page >= PAGES_PER_RUN || workflowInfo().continueAsNewSuggested) {
        await continueAsNew<typeof backfill>({ ...input, cursor, totals });
      }

      let dids: string[];
      let next: string | number | undefined;
      let skipped = 0;
      if (input.source.kind === 'dids') {
        const from = typeof cursor === 'number' ? cursor : 0;
        dids = input.source.dids.slice(from, from + input.pageSize);
        next = from + dids.length < input.source.dids.length ? from + dids.length : undefined;
      } else if (input.source.kind === 'file') {
        const r = await acts.didsFromFile(input.source.path, typeof cursor === 'number' ? cursor : 0, input.pageSize);
        dids = r.dids;
        next = r.nextLine;
      } else {
        const r = await acts.didsFromPds(input.source.url, typeof cursor === 'string' ? cursor : undefined, input.pageSize);
        dids = r.dids;
        next = r.cursor;
        skipped = r.skipped ?? 0;
        totals.invalidListed += skipped;
      }

      if (dids.length > 0) {
        const outcomes = await acts.backfillMany(dids, input.settings, input.concurrency);
        for (const o of outcomes) {
          addOutcome(totals, o);
          if (o.kind === 'retry') {
            handedOver += 1;
            try {
              await startChild(backfillRepo, {
                workflowId: `backfill/${o.did}`,
                args: [{ did: o.did, settings: input.settings, firstOutcome: o }],
                parentClosePolicy: ParentClosePolicy.ABANDON,
                workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
              });
            } catch (err) {
              // Already has a running backfillRepo of its own: that one owns the retries.
              if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
            }
          }
        }
      }
      cursor = next;
      show(paused ? 'paused' : 'running');
      // An empty page ends every source (listRepos keeps a cursor until it returns one).
      // A page of only bad entries is not the end of a listing.
      if (next === undefined || (dids.length === 0 && skipped === 0)) break;
    }
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancelled = true;
  }
  state = cancelled ? 'cancelled' : 'done';
  await CancellationScope.nonCancellable(async () => show(state));
  return progress();
}
