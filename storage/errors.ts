/** Errors the storage layer throws, so callers branch on type rather than message text. */

export class StorageError extends Error {
  override name = 'StorageError';
}

/** A key that is not of the form the blobstore accepts. */
export class InvalidKeyError extends StorageError {
  override name = 'InvalidKeyError';
  readonly key: string;
  constructor(key: string, reason: string) {
    super(`invalid blobstore key ${JSON.stringify(key)}: ${reason}`);
    this.key = key;
  }
}

/** A ranged read that asks for bytes past the end of the object. */
export class RangeNotSatisfiableError extends StorageError {
  override name = 'RangeNotSatisfiableError';
  readonly key: string;
  readonly size: number;
  constructor(key: string, offset: number, length: number, size: number) {
    super(`range ${offset}+${length} is past the end of ${key} (${size} bytes)`);
    this.key = key;
    this.size = size;
  }
}

/** A multiplexed put that reached fewer components than the write quorum. */
export class QuorumError extends StorageError {
  override name = 'QuorumError';
  readonly key: string;
  readonly failures: { component: string; error: string }[];
  constructor(key: string, written: number, quorum: number, failures: { component: string; error: string }[]) {
    super(
      `put ${key} reached ${written} components, the write quorum is ${quorum}: ` +
        failures.map((f) => `${f.component}: ${f.error}`).join('; '),
    );
    this.key = key;
    this.failures = failures;
  }
}

/** No component holds a copy of the key whose bytes match it. */
export class NoVerifiedCopyError extends StorageError {
  override name = 'NoVerifiedCopyError';
  readonly key: string;
  readonly report: { component: string; state: string }[];
  constructor(key: string, report: { component: string; state: string }[]) {
    super(`no component holds a verified copy of ${key}: ` + report.map((r) => `${r.component} ${r.state}`).join(', '));
    this.key = key;
    this.report = report;
  }
}
