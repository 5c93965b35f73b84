/**
 * Resync backoff: the delay before retry number `attempt` (1 for the first retry) doubles from
 * `initialMs` up to `maxMs`, with ±`jitter` spread so that repos failing together do not retry
 * together. Pure, and deterministic given `random`, so workflows can use it with their seeded
 * Math.random.
 */
import { z } from 'zod';

export const BackoffOptions = z.object({
  initialSeconds: z.number().positive().default(60),
  maxSeconds: z.number().positive().default(3600),
  jitter: z.number().min(0).max(1).default(0.1),
});
export type BackoffOptions = z.output<typeof BackoffOptions>;

export function backoffMs(attempt: number, opts: BackoffOptions, random: () => number = Math.random, atLeastMs = 0): number {
  const base = Math.min(opts.initialSeconds * 1000 * 2 ** Math.max(0, attempt - 1), opts.maxSeconds * 1000);
  const spread = base * opts.jitter * (2 * random() - 1);
  return Math.max(Math.round(base + spread), atLeastMs);
}
