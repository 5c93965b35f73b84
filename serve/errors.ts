/**
 * XRPC errors as PDSes answer them: an HTTP status and a body `{ error, message }` whose
 * `error` is the name clients branch on (`RepoNotFound`, `RecordNotFound`, …). Handlers throw
 * these; the server turns anything else into a logged 500 `InternalServerError`.
 */

export type XrpcErrorName =
  | 'InvalidRequest'
  | 'RepoNotFound'
  | 'RepoDeactivated'
  | 'RepoTakendown'
  | 'RepoSuspended'
  | 'RecordNotFound'
  | 'BlobNotFound'
  | 'AuthRequired'
  | 'Forbidden'
  | 'MethodNotImplemented'
  | 'MethodNotAllowed'
  | 'PayloadTooLarge'
  | 'RateLimitExceeded'
  | 'NotFound'
  | 'InternalServerError';

export class XrpcError extends Error {
  override name = 'XrpcError';
  readonly status: number;
  readonly error: XrpcErrorName;
  constructor(status: number, error: XrpcErrorName, message: string) {
    super(message);
    this.status = status;
    this.error = error;
  }

  toJSON(): { error: string; message: string } {
    return { error: this.error, message: this.message };
  }
}

export const invalidRequest = (message: string) => new XrpcError(400, 'InvalidRequest', message);
export const repoNotFound = (did: string) => new XrpcError(400, 'RepoNotFound', `Could not find repo for DID: ${did}`);
export const recordNotFound = (uri: string) => new XrpcError(400, 'RecordNotFound', `Could not locate record: ${uri}`);
