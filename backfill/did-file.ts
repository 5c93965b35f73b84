/**
 * A file of DIDs as a backfill source: one DID a line; blank lines and `#` comments skipped.
 * Read a page at a time from a line number, so that a bulk backfill keeps its place in workflow
 * state and never holds the whole file.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Did } from './settings.ts';

/** A line of the file is not a DID: bad input, which no retry can mend. */
export class InvalidDidLineError extends Error {
  override name = 'InvalidDidLineError';
  readonly path: string;
  readonly line: number;
  constructor(path: string, line: number, text: string) {
    super(`${path}:${line}: not a did:plc or did:web DID: ${JSON.stringify(text.slice(0, 100))}`);
    this.path = path;
    this.line = line;
  }
}

/** Up to `limit` DIDs from line `fromLine` on; `nextLine` is where the next page starts, undefined at the end. */
export async function readDidPage(path: string, fromLine: number, limit: number): Promise<{ dids: string[]; nextLine: number | undefined }> {
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  const dids: string[] = [];
  let line = 0;
  try {
    for await (const raw of rl) {
      line++;
      if (line <= fromLine) continue;
      const text = raw.trim();
      if (text === '' || text.startsWith('#')) continue;
      if (!Did.safeParse(text).success) throw new InvalidDidLineError(path, line, text);
      dids.push(text);
      if (dids.length >= limit) return { dids, nextLine: line };
    }
  } finally {
    rl.close();
  }
  return { dids, nextLine: undefined };
}
