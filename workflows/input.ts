/**
 * Workflow inputs are plain JSON (so `temporal workflow start --input '…'` is a first-class
 * way to start anything) validated with zod; bad input fails the workflow at once, without
 * retries, with a message that names every bad field.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import type { z } from 'zod';

export function parseInput<S extends z.ZodType>(schema: S, raw: unknown, workflow: string): z.output<S> {
  const parsed = schema.safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(input)'}: ${i.message}`);
  throw ApplicationFailure.nonRetryable(`invalid ${workflow} input: ${problems.join('; ')}`, 'InvalidInput', { problems });
}
