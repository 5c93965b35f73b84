/**
 * The smallest repowalk workflow: one activity that touches PostgreSQL and the blobstore.
 * It proves the wiring end to end (client → server → worker → stores) and is what
 * `repowalk ping` and the demo run first.
 */
import { defineQuery, proxyActivities, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { z } from 'zod';
import type { PingActivities } from '../activities/ping.ts';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';
import { parseInput } from './input.ts';

export const PingInput = z.object({
  message: z.string().max(200).default('ping'),
});
export type PingInput = z.input<typeof PingInput>;

export interface PingResult {
  message: string;
  workflowId: string;
  worker: string;
  postgresVersion: string;
  blobstore: string;
  roundTripBytes: number;
}

export interface PingProgress {
  state: 'running' | 'done';
}

export const pingProgressQuery = defineQuery<PingProgress>('progress');

const { pingStores } = proxyActivities<PingActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 3, initialInterval: '1 second' },
});

export async function ping(rawInput: PingInput = {}): Promise<PingResult> {
  const input = parseInput(PingInput, rawInput, 'ping');
  let state: PingProgress['state'] = 'running';
  setHandler(pingProgressQuery, () => ({ state }));
  upsertSearchAttributes([
    { key: RepowalkKind, value: 'ping' },
    { key: RepowalkState, value: 'running' },
  ]);
  const stores = await pingStores(input.message);
  state = 'done';
  upsertSearchAttributes([{ key: RepowalkState, value: state }]);
  return { message: input.message, workflowId: workflowInfo().workflowId, ...stores };
}
