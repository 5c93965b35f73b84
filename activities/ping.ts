import { hostname } from 'node:os';
import type { Stores } from './context.ts';

export function pingActivities(deps: Pick<Stores, 'pool' | 'blobs'>) {
  return {
    /** Reads the PostgreSQL version and writes, reads back and deletes one blobstore object. */
    async pingStores(message: string) {
      const { rows } = await deps.pool.query<{ v: string }>("SELECT current_setting('server_version') AS v");
      const key = `probes/ping-${process.pid}-${Date.now()}`;
      const bytes = new TextEncoder().encode(message);
      await deps.blobs.put(key, bytes);
      const back = await deps.blobs.get(key);
      await deps.blobs.delete(key);
      if (!back || Buffer.compare(Buffer.from(back), Buffer.from(bytes)) !== 0) {
        throw new Error(`blobstore ${deps.blobs.name} returned different bytes for ${key}`);
      }
      return { worker: `${hostname()}:${process.pid}`, postgresVersion: rows[0]!.v, blobstore: deps.blobs.name, roundTripBytes: back.length };
    },
  };
}

export type PingActivities = ReturnType<typeof pingActivities>;
