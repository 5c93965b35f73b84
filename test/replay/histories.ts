/** The recorded workflow histories the replay test replays (`record-histories.test.ts` writes them). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import proto from '@temporalio/proto';

const { History } = proto.temporal.api.history.v1;
export type History = proto.temporal.api.history.v1.History;

export const HISTORIES_DIR = join(import.meta.dirname, 'histories');

export interface RecordedHistory {
  /** What the run went through, in words. */
  scenario: string;
  workflowType: string;
  /** The workflows read their id (child ids, findings ids): replay must use the recorded one. */
  workflowId: string;
  runId: string;
  /**
   * The history as protobuf's JSON object form (enums by name, 64-bit numbers and bytes as
   * strings). Not the CLI's proto3 JSON: its converter (`historyToJSON`) fails on the two copies
   * of protobufjs this install holds.
   */
  history: { events: Array<{ eventId: string; eventType: string } & Record<string, unknown>> };
}

/** A fetched history in the form fixtures keep. */
export function historyToObject(history: proto.temporal.api.history.v1.IHistory): RecordedHistory['history'] {
  return JSON.parse(JSON.stringify(History.toObject(History.fromObject(history), { longs: String, enums: String, bytes: String }))) as RecordedHistory['history'];
}

/** The history of a fixture, as the replay worker takes it. */
export function historyOf(recorded: RecordedHistory): History {
  return History.fromObject(recorded.history);
}

/** Every recorded history, by file name without `.json`. */
export function recordedHistories(): Map<string, RecordedHistory> {
  const out = new Map<string, RecordedHistory>();
  for (const f of readdirSync(HISTORIES_DIR).filter((f) => f.endsWith('.json')).sort()) {
    out.set(f.slice(0, -'.json'.length), JSON.parse(readFileSync(join(HISTORIES_DIR, f), 'utf8')) as RecordedHistory);
  }
  return out;
}
