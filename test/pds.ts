/**
 * Everything a test needs of the reference PDS, in one import: the runner (`stack/pds.ts`), the
 * XRPC client and reads (`xrpc.ts`), fixtures (`pds-fixtures.ts`) and sample content
 * (`pds-seed.ts`).
 */
export * from '../stack/pds.ts';
export * from './xrpc.ts';
export * from './pds-fixtures.ts';
export * from './pds-seed.ts';
