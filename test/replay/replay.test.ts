/**
 * Replay: every recorded history (`histories/*.json`, written by `record-histories.test.ts` from
 * real runs on the dev server) is replayed against today's workflow bundle. A change that makes a
 * workflow decide differently from what its history says (an activity call added, removed or
 * moved; a timer; a signal handled in another order) fails here, as it would fail every
 * `backfill/<did>` waiting out its backoff and every walk tailing in production. Needs no server.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { workflowBundleCode } from '../workflow-bundle.ts';
import { PAGE_SIZE_PATCH, PAGES_IN_FLIGHT_PATCH } from '../../workflows/backfill.ts';
import { historyOf, recordedHistories, type RecordedHistory } from './histories.ts';

const histories = recordedHistories();

async function replay(code: string, recorded: RecordedHistory[]): Promise<Array<{ workflowId: string; error: Error | undefined }>> {
  const out: Array<{ workflowId: string; error: Error | undefined }> = [];
  const runs = Worker.runReplayHistories({ workflowBundle: { code } }, recorded.map((h) => ({ workflowId: h.workflowId, history: historyOf(h) })));
  for await (const r of runs) out.push({ workflowId: r.workflowId, error: r.error });
  return out;
}

const eventTypes = (name: string) => histories.get(name)?.history.events.map((e) => e.eventType.replace('EVENT_TYPE_', '')) ?? [];

describe('replay of recorded histories', () => {
  it('has a history of each long-lived path', () => {
    expect([...histories.keys()].sort()).toEqual(
      ['backfill-bulk', 'backfill-bulk-default-page-size', 'backfill-bulk-default-pages-in-flight', 'backfill-bulk-page-size-100', 'backfill-repo-backoff-pause-resume', 'backfill-repo-cancel', 'backfill-repo-handed-over', 'resync-sweep', 'rotating-walk', 'walk-first-pass', 'walk-slice', 'walk-tail-pass'].sort(),
    );
    const count = (name: string, type: string) => eventTypes(name).filter((t) => t === type).length;
    // The histories hold what they claim to: timers, signals, children, continue-as-new.
    expect(count('backfill-repo-backoff-pause-resume', 'TIMER_STARTED')).toBe(2);
    expect(count('backfill-repo-backoff-pause-resume', 'WORKFLOW_EXECUTION_SIGNALED')).toBe(4);
    expect(count('backfill-bulk', 'START_CHILD_WORKFLOW_EXECUTION_INITIATED')).toBe(1);
    expect(count('backfill-bulk', 'WORKFLOW_EXECUTION_SIGNALED')).toBe(2);
    expect(eventTypes('walk-first-pass').at(-1)).toBe('WORKFLOW_EXECUTION_CONTINUED_AS_NEW');
    expect(count('walk-tail-pass', 'WORKFLOW_EXECUTION_SIGNALED')).toBe(3);
    expect(count('walk-slice', 'ACTIVITY_TASK_COMPLETED')).toBeGreaterThan(1);
  });

  it('holds a bulk backfill without a pageSize begun under each default: 100 DIDs a page before, 1,000 since', () => {
    // The DIDs of each backfillMany the history scheduled (its first argument).
    const pages = (name: string) =>
      histories
        .get(name)!
        .history.events.filter((e) => e.eventType === 'EVENT_TYPE_ACTIVITY_TASK_SCHEDULED')
        .map((e) => {
          const attrs = e.activityTaskScheduledEventAttributes as { activityType: { name: string }; input: { payloads: Array<{ data: string }> } };
          expect(attrs.activityType.name).toBe('backfillMany');
          return (JSON.parse(Buffer.from(attrs.input.payloads[0]!.data, 'base64').toString('utf8')) as string[]).length;
        });
    const started = (name: string) => (histories.get(name)!.history.events[0]!.workflowExecutionStartedEventAttributes as { input: { payloads: Array<{ data: string }> } }).input.payloads[0]!.data;
    for (const name of ['backfill-bulk-page-size-100', 'backfill-bulk-default-page-size']) {
      expect(JSON.parse(Buffer.from(started(name), 'base64').toString('utf8'))).not.toHaveProperty('pageSize');
    }
    expect(pages('backfill-bulk-page-size-100')).toEqual([100, 1]);
    expect(pages('backfill-bulk-default-page-size')).toEqual([101]);
    const markers = (name: string) => eventTypes(name).filter((t) => t === 'MARKER_RECORDED').length;
    expect(markers('backfill-bulk-page-size-100')).toBe(0);
    expect(markers('backfill-bulk-default-page-size')).toBe(1);
    expect(JSON.stringify(histories.get('backfill-bulk-default-page-size')!.history)).toContain(Buffer.from(JSON.stringify(PAGE_SIZE_PATCH)).toString('base64'));
  });

  it('holds a bulk backfill without pagesInFlight begun under each default: one page at a time before, two since', () => {
    // How many pages were scheduled and not yet completed, at most, over the history.
    const mostInFlight = (name: string) => {
      let now = 0;
      let most = 0;
      for (const t of eventTypes(name)) {
        if (t === 'ACTIVITY_TASK_SCHEDULED') most = Math.max(most, ++now);
        if (t === 'ACTIVITY_TASK_COMPLETED') now--;
      }
      return most;
    };
    expect(mostInFlight('backfill-bulk')).toBe(1);
    expect(mostInFlight('backfill-bulk-default-pages-in-flight')).toBe(2);
    expect(eventTypes('backfill-bulk-default-pages-in-flight').filter((t) => t === 'ACTIVITY_TASK_SCHEDULED')).toHaveLength(3);
    expect(JSON.stringify(histories.get('backfill-bulk-default-pages-in-flight')!.history)).toContain(Buffer.from(JSON.stringify(PAGES_IN_FLIGHT_PATCH)).toString('base64'));
    expect(JSON.stringify(histories.get('backfill-bulk')!.history)).not.toContain(Buffer.from(JSON.stringify(PAGES_IN_FLIGHT_PATCH)).toString('base64'));
  });

  it("replays every one against today's workflow code", async () => {
    const results = await replay(await workflowBundleCode(), [...histories.values()]);
    expect(results.map((r) => r.workflowId)).toEqual([...histories.values()].map((h) => h.workflowId));
    expect(results.filter((r) => r.error).map((r) => `${r.workflowId}: ${r.error!.message}`)).toEqual([]);
  }, 120_000);

  it('fails a replay against workflow code that decides differently', async () => {
    const { code } = await bundleWorkflowCode({ workflowsPath: join(import.meta.dirname, 'changed-workflows.ts'), logger: new DefaultLogger('WARN') });
    const [result] = await replay(code, [histories.get('backfill-repo-backoff-pause-resume')!]);
    expect(result?.error).toBeInstanceOf(DeterminismViolationError);
  }, 120_000);
});
