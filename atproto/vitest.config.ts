/**
 * The atproto module's unit tests need no stack (no Temporal, PostgreSQL or S3), so this config
 * runs them without the project's global setup:
 * `npx vitest run --config atproto/vitest.config.ts atproto/`. They pass under the main config too.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['atproto/**/*.test.ts'],
    exclude: ['node_modules/**', 'atproto/net/**'],
    testTimeout: 120_000,
  },
});
