/**
 * One step function per node type: load the node, return its payload and its outgoing edges.
 * `STEPS` is a mapped type over the schema's node types, so a node type without a step does not
 * compile.
 */
import type { NodeType } from '../schema.ts';
import type { NodeOf } from '../nodes.ts';
import type { MaybePromise } from '../maybe-promise.ts';
import type { StepContext, StepResult } from './context.ts';
import { stepRepo } from './repo.ts';
import { stepCommit } from './commit.ts';
import { stepMstNode } from './mst-node.ts';
import { stepRecord } from './record.ts';
import { stepBlob } from './blob.ts';
import { stepRecordRow } from './record-row.ts';
import { stepEvent } from './event.ts';
import { stepPack } from './pack.ts';
import { stepBlock } from './block.ts';

/** Steps a node; `path` is the repo path of the edge that led to it, where it had one. */
export type Step<T extends NodeType> = (node: NodeOf<T>, ctx: StepContext, path: string | undefined) => MaybePromise<StepResult<T>>;

export const STEPS: { readonly [T in NodeType]: Step<T> } = {
  Repo: stepRepo,
  Commit: stepCommit,
  MstNode: stepMstNode,
  Record: stepRecord,
  Blob: stepBlob,
  RecordRow: stepRecordRow,
  Event: stepEvent,
  Pack: stepPack,
  Block: stepBlock,
};

/** Steps `node` with the step of its type. */
export function step(node: NodeOf<NodeType>, ctx: StepContext, path: string | undefined): MaybePromise<StepResult<NodeType>> {
  return (STEPS[node.type] as Step<NodeType>)(node, ctx, path);
}
