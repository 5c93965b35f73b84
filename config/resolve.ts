/**
 * Where the services are: the configuration when it names them, else the local stack that
 * `repowalk stack up` recorded in `<stateDir>/stack.json`.
 */
import type { Config } from './options.ts';
import { readStackInfo, type StackInfo } from './stack-info.ts';

export interface Endpoints {
  temporalAddress: string;
  namespace: string;
  databaseUrl: string;
  s3: { endpoint: string | undefined; region: string; accessKeyId: string | undefined; secretAccessKey: string | undefined; buckets: string[]; forcePathStyle: boolean };
  stack: StackInfo | undefined;
}

export class NoServiceError extends Error {
  override name = 'NoServiceError';
}

export function resolveEndpoints(config: Config, needs: { database?: boolean } = {}): Endpoints {
  const stack = readStackInfo(config.stateDir);
  const databaseUrl = config.database.url ?? stack?.postgres.url;
  if (needs.database !== false && !databaseUrl) {
    throw new NoServiceError(`no database: DATABASE_URL is not set and no local stack is running in ${config.stateDir} (start one with ./repowalk stack up)`);
  }
  const fromStack = !config.s3.endpoint && stack?.s3;
  return {
    temporalAddress: config.temporal.address ?? stack?.temporal.address ?? `127.0.0.1:${config.temporal.port}`,
    namespace: config.temporal.namespace,
    databaseUrl: databaseUrl ?? '',
    s3: {
      endpoint: config.s3.endpoint ?? (fromStack ? stack!.s3!.endpoint : undefined),
      region: config.s3.region,
      accessKeyId: config.s3.accessKeyId ?? (fromStack ? stack!.s3!.accessKeyId : undefined),
      secretAccessKey: config.s3.secretAccessKey ?? (fromStack ? stack!.s3!.secretAccessKey : undefined),
      buckets: config.s3.buckets,
      forcePathStyle: config.s3.forcePathStyle,
    },
    stack,
  };
}
