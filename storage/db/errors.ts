/** Errors of the Postgres layer (pool and migrations), so callers branch on type. */
import { StorageError } from '../errors.ts';

/** Postgres could not be reached or refused the connection. The URL in the message is redacted. */
export class DatabaseConnectError extends StorageError {
  override name = 'DatabaseConnectError';
  /** The database URL with its password replaced by `***`. */
  readonly url: string;
  constructor(url: string, cause: unknown) {
    super(`cannot connect to ${url}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.url = url;
  }
}

/** A migration that was applied has different contents now. Never edit an applied migration. */
export class MigrationChecksumError extends StorageError {
  override name = 'MigrationChecksumError';
  readonly file: string;
  constructor(file: string, applied: string, current: string) {
    super(
      `migration ${file} was applied with checksum ${applied} but the file now has ${current}; ` +
        `applied migrations must not change: revert the edit and add a new migration instead`,
    );
    this.file = file;
  }
}

/**
 * The migrations on disk and those applied disagree in a way that is unsafe to resolve
 * automatically: a pending migration sorts before one that is already applied, two files share
 * a version, or a file name is not `NNNN_name.sql`.
 */
export class MigrationOrderError extends StorageError {
  override name = 'MigrationOrderError';
}

/** A migration's SQL failed; its transaction was rolled back and nothing of it is applied. */
export class MigrationFailedError extends StorageError {
  override name = 'MigrationFailedError';
  readonly file: string;
  constructor(file: string, cause: unknown) {
    super(`migration ${file} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.file = file;
  }
}
