/**
 * A timeline of the bulk backfill's wall time, for finding where it waits with no CPU in use:
 * pages (activities) begun and ended, lanes busy, store batches begun and committed. Off unless
 * `REPOWALK_TIMELINE=1` (or `enableTimeline()`); then each mark costs a push onto an array in this process, which
 * `bench/e2e.ts` (whose worker runs in its own process) reads and sums up with `summarizeTimeline`.
 */

export type TimelineKind =
  | 'page-start'
  | 'page-lanes-done'
  | 'page-end'
  | 'lanes'
  | 'batch-begin'
  | 'batch-commit'
  | 'run-start'
  | 'run-end';

export interface TimelineMark {
  /** performance.now() of this process, in milliseconds. */
  at: number;
  kind: TimelineKind;
  /** `lanes`: lanes busy after the change; `batch-*`: changes in the batch; `page-*`: DIDs. */
  n: number;
  /** `page-*`: which page (numbered in this process from 0). */
  page?: number;
}

const marks: TimelineMark[] = [];
/** Read live (an ESM binding): `enableTimeline()` turns it on after import. */
export let timelineOn = process.env.REPOWALK_TIMELINE === '1';

export function enableTimeline(): void {
  timelineOn = true;
}

export function mark(kind: TimelineKind, n = 0, page?: number): void {
  if (timelineOn) marks.push({ at: performance.now(), kind, n, ...(page === undefined ? {} : { page }) });
}

/** The marks since `from` (an index returned by `timelineLength`). */
export function timelineSince(from: number): TimelineMark[] {
  return marks.slice(from);
}

export function timelineLength(): number {
  return marks.length;
}

/**
 * Where a run's wall time went, in milliseconds from `run-start` to `run-end`:
 * - `noLanes`: no lane busy, split into before the first page, between pages and after the last;
 * - `laneIdleShare`: the share of lane time not spent (1 − mean lanes busy / `lanes`);
 * - `pages`: per page, its start, when its last lane finished and its end (relative to run start),
 *   so that the page's own tail (last lane done to activity end: the last batches' commits) shows;
 * - `batches`: count, and the time with a batch in flight.
 */
export function summarizeTimeline(tl: TimelineMark[], lanes: number) {
  const t0 = tl.find((m) => m.kind === 'run-start')?.at ?? tl[0]?.at ?? 0;
  const t1 = tl.findLast((m) => m.kind === 'run-end')?.at ?? tl.at(-1)?.at ?? 0;
  const r = (x: number) => Math.round(x - t0);
  let busy = 0;
  let last = t0;
  let laneMs = 0;
  let firstBusy: number | undefined;
  let lastBusy = t0;
  let noLanesBetween = 0;
  let inBatch = 0;
  let batchFrom = 0;
  let batchMs = 0;
  let batches = 0;
  const pages = new Map<number | undefined, { start: number; lanesDone?: number; end?: number; dids: number }>();
  for (const m of tl) {
    if (m.at < t0 || m.at > t1) continue;
    laneMs += busy * (m.at - last);
    if (busy === 0 && firstBusy !== undefined && m.kind === 'lanes' && m.n > 0) noLanesBetween += m.at - lastBusy;
    last = m.at;
    switch (m.kind) {
      case 'lanes':
        if (m.n > 0 && firstBusy === undefined) firstBusy = m.at;
        if (m.n === 0) lastBusy = m.at;
        busy = m.n;
        break;
      case 'batch-begin':
        if (inBatch++ === 0) batchFrom = m.at;
        batches++;
        break;
      case 'batch-commit':
        if (--inBatch === 0) batchMs += m.at - batchFrom;
        break;
      case 'page-start':
        pages.set(m.page, { start: r(m.at), dids: m.n });
        break;
      case 'page-lanes-done':
        pages.get(m.page)!.lanesDone = r(m.at);
        break;
      case 'page-end':
        pages.get(m.page)!.end = r(m.at);
        break;
    }
  }
  laneMs += busy * (t1 - last);
  const wall = t1 - t0;
  return {
    wallMs: Math.round(wall),
    noLanesMs: {
      beforeFirst: Math.round((firstBusy ?? t1) - t0),
      betweenPages: Math.round(noLanesBetween),
      afterLast: Math.round(t1 - lastBusy),
    },
    laneIdleShare: wall > 0 ? Math.round((1 - laneMs / (lanes * wall)) * 1000) / 1000 : 0,
    batches,
    batchInFlightMs: Math.round(batchMs),
    pages: [...pages.values()],
  };
}
