/** A Temporal client for the configured (or local stack's) server. */
import { Client, Connection } from '@temporalio/client';
import type { Endpoints } from '../config/resolve.ts';

export async function connectClient(endpoints: Pick<Endpoints, 'temporalAddress' | 'namespace'>): Promise<Client> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ address: endpoints.temporalAddress, connectTimeout: 5_000 });
  } catch (err) {
    throw new Error(`cannot reach Temporal at ${endpoints.temporalAddress} (${(err as Error).message}); start the local stack with ./repowalk stack up, or set TEMPORAL_ADDRESS`);
  }
  return new Client({ connection, namespace: endpoints.namespace });
}
