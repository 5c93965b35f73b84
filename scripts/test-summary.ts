// Prints vitest's JSON reports as one plain closing line: `tests: N passed, N failed, N skipped`,
// summed over every report named (the main run and the server-mode run of scripts/test).
// Exits non-zero when a test failed or nothing ran, so neither passes for a green run.
import { readFileSync } from 'node:fs';

interface Report { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number; numTotalTests: number }

const files = process.argv.length > 2 ? process.argv.slice(2) : ['test-artifacts/vitest.json'];
const total = { passed: 0, failed: 0, skipped: 0, all: 0 };
let missing = false;
for (const file of files) {
  let report: Report;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    console.error(`no test report at ${file}: ${(err as Error).message}`);
    missing = true;
    continue;
  }
  const skipped = report.numPendingTests + report.numTodoTests;
  if (files.length > 1) console.log(`${file}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped`);
  total.passed += report.numPassedTests;
  total.failed += report.numFailedTests;
  total.skipped += skipped;
  total.all += report.numTotalTests;
}
console.log(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
process.exit(total.all > 0 && total.failed === 0 && !missing ? 0 : 1);
