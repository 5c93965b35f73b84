// Prints vitest's JSON report as one plain closing line: `tests: N passed, N failed, N skipped`.
// Exits non-zero when a test failed or nothing ran, so neither passes for a green run.
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? 'test-artifacts/vitest.json';
let report: { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number; numTotalTests: number };
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.error(`no test report at ${file}: ${(err as Error).message}`);
  process.exit(1);
}
console.log(`tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests + report.numTodoTests} skipped`);
process.exit(report.numTotalTests > 0 && report.numFailedTests === 0 ? 0 : 1);
