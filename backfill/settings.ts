/**
 * What a backfill does with each repo: plain JSON, validated with zod, carried in workflow
 * input so that every run shows in the UI how it was configured. Holds no secret.
 */
import { z } from 'zod';
import { FilterOptions } from './filters.ts';
import { BackoffOptions } from './backoff.ts';
import { didProblem } from '../atproto/net/did.ts';

export const BackfillSettings = z.object({
  filter: FilterOptions.default({ mode: 'full', include: [], exclude: [], signal: [] }),
  /** Ephemeral mode: keep events for this many seconds, and no record index. */
  ephemeralRetentionSeconds: z.number().int().positive().optional(),
  /** Fetch and store the blobs records reference. */
  blobs: z.boolean().default(false),
  /** Refuse a repo CAR larger than this. */
  maxCarBytes: z.number().int().positive().default(256 * 1024 * 1024),
  backoff: BackoffOptions.default({ initialSeconds: 60, maxSeconds: 3600, jitter: 0.1 }),
  /** When a gone repo is tried again. */
  goneRecheckSeconds: z.number().int().positive().default(7 * 24 * 3600),
});
export type BackfillSettings = z.output<typeof BackfillSettings>;
export type BackfillSettingsInput = z.input<typeof BackfillSettings>;

/** A DID repowalk can mirror: the same check the resolver, the CLI and a PDS listing go through. */
export const Did = z.string().check((ctx) => {
  const problem = didProblem(ctx.value);
  if (problem !== undefined) ctx.issues.push({ code: 'custom', message: `expected a did:plc or did:web DID: ${problem}`, input: ctx.value });
});

export type ResyncKind = 'rate-limited' | 'transport' | 'error';

/** What one attempt at one repo came to. */
export type RepoOutcome =
  | { did: string; kind: 'imported'; rev: string; created: number; updated: number; deleted: number; unchanged: number; newBlocks: number; packBytes: number; blobs: number; missingBlobs: number }
  | { did: string; kind: 'skipped'; rev: string }
  | { did: string; kind: 'dropped'; reason: string }
  | { did: string; kind: 'gone'; status: 'deactivated' | 'takendown' | 'suspended' }
  | { did: string; kind: 'deleted' }
  | { did: string; kind: 'retry'; resync: ResyncKind; error: string; retryAfterMs?: number | undefined };
