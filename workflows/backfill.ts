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
  patched,
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
  /**
   * DIDs per activity. Default 1,000 (`DEFAULT_PAGE_SIZE`): the Temporal server spends tens of
   * milliseconds of CPU on each activity, about 1 ms per repo at 100 a page. Left unset here so
   * that a history begun when the default was 100 replays with 100 (see `pageSizeOf`).
   */
  pageSize: z.number().int().min(1).max(1000).optional(),
  /** Repos imported at once inside one activity. */
  concurrency: z.number().int().min(1).max(64).default(8),
  /**
   * Pages imported at once, each its own activity: with several worker processes on the queue,
   * this is how many of them share one bulk backfill. Pages are still listed, and settled, in
   * order. Default 2 (`DEFAULT_PAGES_IN_FLIGHT`): on one worker the next page's lanes start as
   * the current page runs out of DIDs (a worker's pages share its lanes, the oldest first), so
   * the worker does not idle while a page's last batches commit and the next page is listed and
   * scheduled. Left unset here so that a history begun when the default was 1 replays with 1.
   */
  pagesInFlight: z.number().int().min(1).max(64).optional(),
  /** Heartbeat timeout of a page's activity: how soon a page whose worker died is retried elsewhere. */
  heartbeatSeconds: z.number().int().min(5).max(3600).default(60),
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

const ACTIVITY_OPTIONS = {
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
} as const;
const acts = proxyActivities<BackfillActivities>(ACTIVITY_OPTIONS);

/** DIDs per activity when the input names none. */
export const DEFAULT_PAGE_SIZE = 1000;
/** The default before it was 1,000, for histories begun then. */
const OLD_DEFAULT_PAGE_SIZE = 100;
/** Marks the histories begun with DEFAULT_PAGE_SIZE as the default. */
export const PAGE_SIZE_PATCH = 'backfill-default-page-size-1000';

/**
 * The page size of a run: the input's, else the default — 1,000 in a history begun since the
 * default changed, 100 in one begun before (replayed, it must list and import the same pages).
 */
function pageSizeOf(input: { pageSize?: number | undefined }): number {
  if (input.pageSize !== undefined) return input.pageSize;
  return patched(PAGE_SIZE_PATCH) ? DEFAULT_PAGE_SIZE : OLD_DEFAULT_PAGE_SIZE;
}

/** Pages in flight when the input names none. */
export const DEFAULT_PAGES_IN_FLIGHT = 2;
/** Marks the histories begun with DEFAULT_PAGES_IN_FLIGHT as the default (before, it was 1). */
export const PAGES_IN_FLIGHT_PATCH = 'backfill-default-pages-in-flight-2';

function pagesInFlightOf(input: { pagesInFlight?: number | undefined }): number {
  if (input.pagesInFlight !== undefined) return input.pagesInFlight;
  return patched(PAGES_IN_FLIGHT_PATCH) ? DEFAULT_PAGES_IN_FLIGHT : 1;
}

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
  const parsed = parseInput(BackfillInput, rawInput, 'backfill');
  // Resolved once, first thing, and carried through continue-as-new: a run keeps its page size
  // and its pages in flight.
  const input = { ...parsed, pageSize: pageSizeOf(parsed), pagesInFlight: pagesInFlightOf(parsed) };
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

  const importer = input.heartbeatSeconds === 60 ? acts : proxyActivities<BackfillActivities>({ ...ACTIVITY_OPTIONS, heartbeatTimeout: `${input.heartbeatSeconds} seconds` });
  /** Where listing has got to; `cursor` is where importing has (every page before it is done). */
  let listed = cursor;
  const inFlight: Array<{ outcomes: Promise<RepoOutcome[]>; next: string | number | undefined }> = [];
  /** Awaits the oldest page in flight; its outcomes count and hand over in page order. */
  const settleOldest = async () => {
    const page = inFlight[0]!;
    const outcomes = await page.outcomes;
    inFlight.shift();
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
    cursor = page.next;
    show(paused ? 'paused' : 'running');
  };

  try {
    for (let page = 0; ; page++) {
      if (paused) {
        show('paused');
        await condition(() => !paused || cancelled);
        if (!cancelled) show('running');
      }
      if (cancelled) break;
      if (page >= PAGES_PER_RUN || workflowInfo().continueAsNewSuggested) {
        while (inFlight.length > 0) await settleOldest();
        await continueAsNew<typeof backfill>({ ...input, cursor: listed, totals });
      }

      let dids: string[];
      let next: string | number | undefined;
      let skipped = 0;
      if (input.source.kind === 'dids') {
        const from = typeof listed === 'number' ? listed : 0;
        dids = input.source.dids.slice(from, from + input.pageSize);
        next = from + dids.length < input.source.dids.length ? from + dids.length : undefined;
      } else if (input.source.kind === 'file') {
        const r = await acts.didsFromFile(input.source.path, typeof listed === 'number' ? listed : 0, input.pageSize);
        dids = r.dids;
        next = r.nextLine;
      } else {
        const r = await acts.didsFromPds(input.source.url, typeof listed === 'string' ? listed : undefined, input.pageSize);
        dids = r.dids;
        next = r.cursor;
        skipped = r.skipped ?? 0;
        totals.invalidListed += skipped;
      }

      if (dids.length > 0) {
        const outcomes = importer.backfillMany(dids, input.settings, input.concurrency);
        // Awaited in page order; until then a failure must not count as an unhandled rejection.
        outcomes.catch(() => {});
        inFlight.push({ outcomes, next });
        while (inFlight.length >= input.pagesInFlight) await settleOldest();
      } else {
        cursor = next;
        show(paused ? 'paused' : 'running');
      }
      listed = next;
      // An empty page ends every source (listRepos keeps a cursor until it returns one).
      // A page of only bad entries is not the end of a listing.
      if (next === undefined || (dids.length === 0 && skipped === 0)) break;
    }
    while (inFlight.length > 0) await settleOldest();
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancelled = true;
  }
  state = cancelled ? 'cancelled' : 'done';
  await CancellationScope.nonCancellable(async () => show(state));
  return progress();
}
