/**
 * The stack's `REPOWALK_TEMPORAL=server` mode is what it claims: the real Temporal server keeps
 * history in PostgreSQL over several shards, answers visibility queries from SQL (custom search
 * attributes included), its schema is migrated idempotently by temporal-sql-tool, and the Web
 * UI reads from it. Runs only in that mode (`scripts/test` runs it there after the main run).
 */
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { loadConfig } from '../config/load.ts';
import { ensureGoTool, TEMPORAL_SQL_TOOL } from '../stack/tools.ts';
import { migrateTemporalDatabase, TEMPORAL_DATABASES } from '../stack/temporal-cluster.ts';
import { RepowalkKind } from '../workflows/search-attributes.ts';
import { testStack } from './stack.ts';
import { waitFor } from './helpers.ts';

const serverMode = process.env.REPOWALK_TEMPORAL === 'server';

function databaseUrl(name: string): string {
  const url = new URL(testStack().databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function query<T extends pg.QueryResultRow>(db: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: databaseUrl(db) });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

describe.runIf(serverMode)('the real Temporal server on PostgreSQL (REPOWALK_TEMPORAL=server)', () => {
  it('keeps history in PostgreSQL over more than one shard, and visibility in SQL', async () => {
    const shards = await query<{ n: string }>(TEMPORAL_DATABASES.history, 'SELECT count(*) AS n FROM shards');
    expect(Number(shards[0]!.n)).toBeGreaterThan(1);

    const { temporal } = testStack();
    const client = new Client({ connection: await Connection.connect({ address: temporal.address }), namespace: temporal.namespace });
    const workflowId = `server-mode-probe-${Date.now()}`;
    // No worker polls this queue: the workflow stays open, which is all visibility needs.
    const handle = await client.workflow.start('probe', { taskQueue: `nobody-${workflowId}`, workflowId, typedSearchAttributes: [{ key: RepowalkKind, value: 'server-mode-probe' }] });
    try {
      const rows = await waitFor('the probe in the SQL visibility store', async () => {
        const r = await query<{ workflow_id: string; workflow_type_name: string }>(
          TEMPORAL_DATABASES.visibility,
          'SELECT workflow_id, workflow_type_name FROM executions_visibility WHERE workflow_id = $1',
          [workflowId],
        );
        return r.length > 0 ? r : undefined;
      }, 30_000);
      expect(rows[0]).toEqual({ workflow_id: workflowId, workflow_type_name: 'probe' });
      const listed = await waitFor('a visibility query on a repowalk search attribute', async () => {
        const ids: string[] = [];
        for await (const w of client.workflow.list({ query: `RepowalkKind = 'server-mode-probe' AND WorkflowId = '${workflowId}'` })) ids.push(w.workflowId);
        return ids.length > 0 ? ids : undefined;
      }, 30_000);
      expect(listed).toEqual([workflowId]);
      // History events of this workflow are rows in the history database.
      const history = await query<{ n: string }>(TEMPORAL_DATABASES.history, 'SELECT count(*) AS n FROM executions WHERE workflow_id = $1', [workflowId]);
      expect(Number(history[0]!.n)).toBe(1);

      // The Web UI is the ui-server, pointed at this frontend: its API lists the probe.
      const ui = await fetch(`${temporal.uiUrl}/api/v1/namespaces/${temporal.namespace}/workflows?query=${encodeURIComponent(`WorkflowId = '${workflowId}'`)}`);
      expect(ui.status).toBe(200);
      expect(await ui.text()).toContain(workflowId);
    } finally {
      await handle.terminate('probe done');
      await client.connection.close();
    }
  });

  it('migrates the schema idempotently: a second temporal-sql-tool run changes no version', async () => {
    const versions = () => query<{ curr_version: string }>(TEMPORAL_DATABASES.history, 'SELECT curr_version FROM schema_version');
    const before = await versions();
    expect(before[0]!.curr_version).toMatch(/^1\.\d+$/);
    const sqlTool = await ensureGoTool(loadConfig({ env: { REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR } }).cacheDir, TEMPORAL_SQL_TOOL);
    const u = new URL(testStack().databaseUrl);
    const target = { host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
    await migrateTemporalDatabase(sqlTool, target, TEMPORAL_DATABASES.history, 'postgresql/v12/temporal');
    expect(await versions()).toEqual(before);
  }, 120_000);
});
