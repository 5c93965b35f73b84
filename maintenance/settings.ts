/**
 * What a GC run and a retention run take: plain JSON validated with zod. The workflows validate
 * their input with these (`workflows/gc.ts`, `workflows/retention.ts`), and the activities take
 * what they output, so the two cannot drift apart.
 */
import { z } from 'zod';

export const GcSettings = z.object({
  /** Packs, blobs and orphans younger than this are kept. */
  graceSeconds: z.number().int().min(0).default(86400),
  /** Repack packs whose live share of bytes is below this; 0 turns repacking off. */
  repackBelow: z.number().min(0).max(1).default(0.25),
  repackTargetBytes: z.number().int().min(1024).optional(),
  /** Report what would be done, change nothing. */
  dryRun: z.boolean().default(false),
  orphans: z.boolean().default(true),
});
export type GcSettings = z.output<typeof GcSettings>;

export const RetentionSettings = z.object({
  batchSize: z.number().int().min(1).max(100_000).default(5000),
  /** Stop after this many batches; the rest waits for the next run. */
  maxBatches: z.number().int().min(1).optional(),
});
export type RetentionSettings = z.output<typeof RetentionSettings>;
