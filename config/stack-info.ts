/**
 * What `repowalk stack up` records in `<stateDir>/stack.json`: the address of every service of
 * the local stack. The stack writes it (`stack/stack.ts`); everything that needs an address when
 * the configuration names none reads it here (`resolve.ts`, the CLI).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Which Temporal the stack runs: the dev server, or the real server on PostgreSQL (REPOWALK_TEMPORAL). */
export type TemporalMode = 'dev' | 'server';

/** What `stack.json` records: every address, and the supervisor's pid. */
export interface StackInfo {
  pid: number;
  startedAt: string;
  stateDir: string;
  /** `bin` is the temporal CLI (the client commands), whichever server runs. */
  temporal: { address: string; namespace: string; uiUrl: string | undefined; bin: string; mode?: TemporalMode };
  postgres: { url: string; embedded: boolean };
  s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string; buckets: string[]; bin: string } | undefined;
  blobDir: string;
  /** The local PDS and PLC, when started. The admin password stays in the PDS's own data dir. */
  pds?: { url: string; plcUrl: string; publicUrl: string } | undefined;
}

export function stackFile(stateDir: string): string {
  return join(stateDir, 'stack.json');
}

/** The recorded stack, if its supervisor is still alive. */
export function readStackInfo(stateDir: string): StackInfo | undefined {
  const file = stackFile(stateDir);
  if (!existsSync(file)) return undefined;
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as StackInfo;
    process.kill(info.pid, 0);
    return info;
  } catch {
    return undefined;
  }
}
