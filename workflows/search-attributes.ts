/**
 * repowalk's search attributes: what `temporal workflow list --query …` and the Web UI filter
 * on. The dev server registers them at start (stack/temporal-server.ts); a production cluster
 * gets them with `temporal operator search-attribute create` (see README).
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** What a workflow is: `backfill`, `walk`, `walk-slice`, `maintenance`, `ping`. */
export const RepowalkKind = defineSearchAttributeKey('RepowalkKind', SearchAttributeType.KEYWORD);
/** The walk type of a walk: `scrub`, `validate`, `corpus`, `compression-benefit`. */
export const WalkType = defineSearchAttributeKey('WalkType', SearchAttributeType.KEYWORD);
/** Where it is: `running`, `paused`, `backoff`, `done`, `failed`, … */
export const RepowalkState = defineSearchAttributeKey('RepowalkState', SearchAttributeType.KEYWORD);
/** The repo a per-repo workflow works on. */
export const RepoDid = defineSearchAttributeKey('RepoDid', SearchAttributeType.KEYWORD);
/** How many times a per-repo backfill has been retried. */
export const RepowalkRetryCount = defineSearchAttributeKey('RepowalkRetryCount', SearchAttributeType.INT);

/** Name → type as the temporal CLI's `--search-attribute` flag spells it. */
export const SEARCH_ATTRIBUTES: Record<string, 'Keyword' | 'Int'> = {
  RepowalkKind: 'Keyword',
  WalkType: 'Keyword',
  RepowalkState: 'Keyword',
  RepoDid: 'Keyword',
  RepowalkRetryCount: 'Int',
};
