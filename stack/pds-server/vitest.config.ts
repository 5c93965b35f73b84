// Runs test/pds.test.ts without the project's global setup (it needs no Temporal or Postgres):
//   npx vitest run --config stack/pds-server/vitest.config.ts
import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  test: {
    root: fileURLToPath(new URL('../..', import.meta.url)),
    include: ['test/pds.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 900_000,
    teardownTimeout: 60_000,
  },
});
