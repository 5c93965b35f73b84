import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { Connection } from '@temporalio/client';
import { ListBucketsCommand } from '@aws-sdk/client-s3';
import { freshDatabase, s3ClientFor, testStack } from './stack.ts';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';

describe('the stack the global setup starts', () => {
  it('runs a real PostgreSQL that accepts a fresh database', async () => {
    const url = await freshDatabase('smoke');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const { rows } = await client.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v");
    await client.end();
    expect(rows[0]!.v).toBeGreaterThanOrEqual(150000);
  });

  it('runs a Temporal dev server with repowalk search attributes registered', async () => {
    const { temporal } = testStack();
    const conn = await Connection.connect({ address: temporal.address });
    const attrs = await conn.operatorService.listSearchAttributes({ namespace: temporal.namespace });
    await conn.close();
    for (const name of Object.keys(SEARCH_ATTRIBUTES)) expect(attrs.customAttributes).toHaveProperty(name);
  });

  it('serves the Temporal Web UI', async () => {
    const res = await fetch(testStack().temporal.uiUrl);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/<html/i);
  });

  it('runs an S3 server holding the two stack buckets', async () => {
    const client = s3ClientFor(testStack().s3);
    const out = await client.send(new ListBucketsCommand({}));
    client.destroy();
    expect((out.Buckets ?? []).map((b) => b.Name)).toEqual(expect.arrayContaining(['repowalk-a', 'repowalk-b']));
  });
});
