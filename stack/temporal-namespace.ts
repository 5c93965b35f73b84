/**
 * A namespace ready for repowalk on a Temporal server that did not make it itself: registered,
 * with repowalk's search attributes, and usable by the frontend. The dev server does all of this
 * from its command line (stack/temporal-server.ts); the real server (stack/temporal-cluster.ts)
 * and any production cluster need it done through the API, which is what this does.
 */
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common';
import proto from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';

const { IndexedValueType } = proto.temporal.api.enums.v1;
const INDEXED: Record<string, proto.temporal.api.enums.v1.IndexedValueType> = {
  Keyword: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: IndexedValueType.INDEXED_VALUE_TYPE_INT,
};

/** gRPC status codes the registration treats as "already done". */
const ALREADY_EXISTS = 6;

export interface PrepareNamespaceOptions {
  namespace: string;
  /** How long closed workflows stay in history. Default 3 days. */
  retentionDays?: number;
  log?: (line: string) => void;
}

/**
 * Registers `namespace` (when missing) and the search attributes repowalk's workflows set (those
 * missing), then waits until a visibility query naming them answers: until then a workflow that
 * upserts one of them would fail its task.
 */
export async function prepareNamespace(conn: Connection, opts: PrepareNamespaceOptions): Promise<void> {
  const { namespace } = opts;
  const log = opts.log ?? (() => {});
  try {
    await conn.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs(`${opts.retentionDays ?? 3} days`),
      description: 'repowalk',
    });
    log(`registered namespace ${namespace}`);
  } catch (err) {
    if ((err as { code?: number }).code !== ALREADY_EXISTS) throw err;
  }
  // The frontend's namespace cache catches up after a refresh interval (1 s in the stack's config).
  await until(`namespace ${namespace} to be served`, async () => {
    await conn.workflowService.describeNamespace({ namespace });
  });
  const present = await conn.operatorService.listSearchAttributes({ namespace });
  const missing = Object.entries(SEARCH_ATTRIBUTES).filter(([name]) => !(name in (present.customAttributes ?? {})));
  if (missing.length > 0) {
    await conn.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map(([name, type]) => [name, INDEXED[type]!])),
    });
    log(`registered search attributes ${missing.map(([n]) => n).join(', ')} in ${namespace}`);
  }
  const query = Object.keys(SEARCH_ATTRIBUTES).map((name) => `${name} IS NOT NULL`).join(' OR ');
  await until(`search attributes of ${namespace} to be queryable`, async () => {
    await conn.workflowService.listWorkflowExecutions({ namespace, query, pageSize: 1 });
  });
}

async function until(what: string, attempt: () => Promise<void>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for ${what}: ${(err as Error)?.message ?? err}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
