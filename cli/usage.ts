/** A command line the CLI cannot act on: printed as `repowalk: <message>`, exit code 1, no stack trace. */
export class UsageError extends Error {
  override name = 'UsageError';
}
