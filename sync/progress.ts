/** What a subscription has done: the numbers the `progress` query, the CLI and metrics show. */
export interface SyncProgress {
  host: string;
  /** Last sequence number applied (committed with the events it covers). */
  cursor: number | undefined;
  connected: boolean;
  /** Frames by type (`#commit`, `#identity`, …, `malformed`, `unknown`, `error`). */
  frames: Record<string, number>;
  /** Change outcomes: imported, skipped (replays), gap, dropped, account, identity. */
  outcomes: Record<string, number>;
  /** Frames kept as errors (bad signature, bad proof, malformed, unknown type, error frames). */
  errors: number;
  resyncs: number;
  reconnects: number;
  /** Applied frames per second over the last interval. */
  eventsPerSecond: number;
  /** Upstream clock (the last applied frame's `time`) behind ours, in ms. */
  lagMs: number | undefined;
  outdatedCursor: number;
  /** Repos whose commits wait for a resync to land. */
  waitingRepos: number;
  lastError: string | undefined;
}

export function newProgress(host: string, cursor: number | undefined): SyncProgress {
  return {
    host, cursor, connected: false, frames: {}, outcomes: {}, errors: 0, resyncs: 0, reconnects: 0,
    eventsPerSecond: 0, lagMs: undefined, outdatedCursor: 0, waitingRepos: 0, lastError: undefined,
  };
}

export function bump(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}
