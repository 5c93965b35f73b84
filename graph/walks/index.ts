/**
 * The walk types: for each, the node types it walks unless told otherwise and the visitor that
 * does its work. A new walk type is a row in `WALK_TYPES` and a case in `makeVisitor`.
 */
import type pg from 'pg';
import type { BlobStore } from '../../storage/blobstore/types.ts';
import type { Visitor } from '../engine.ts';
import type { WalkGraph } from '../schema.ts';
import { compressionVisitor, type CompressionOptions } from './compression.ts';
import { corpusVisitor, type CorpusOptions } from './corpus.ts';
import { scrubVisitor, type ScrubOptions } from './scrub.ts';
import { validateVisitor, type ValidateOptions } from './validate/index.ts';
import type { WalkTypeName } from './names.ts';

export { WALK_TYPES, WALK_TYPE_NAMES, type WalkTypeName } from './names.ts';

export interface WalkTypeOptions {
  scrub?: ScrubOptions;
  validate?: ValidateOptions;
  corpus?: CorpusOptions;
  compression?: CompressionOptions;
}

export interface VisitorStores {
  pool: pg.Pool;
  store: BlobStore;
  healQueue?: ScrubOptions['healQueue'];
}

export class MissingWalkOptionError extends Error {
  override name = 'MissingWalkOptionError';
}

/**
 * The visitor of walk type `type`.
 * @throws {MissingWalkOptionError} when corpus has no output directory.
 * @throws {UnknownCheckError} (validate) on an unknown check.
 */
export function makeVisitor(type: WalkTypeName, stores: VisitorStores, options: WalkTypeOptions, graph: WalkGraph): Visitor {
  switch (type) {
    case 'scrub':
      return scrubVisitor(stores.store, { ...(stores.healQueue ? { healQueue: stores.healQueue } : {}), ...options.scrub });
    case 'validate':
      return validateVisitor(stores.pool, options.validate, graph);
    case 'corpus':
      if (!options.corpus?.outputDir) throw new MissingWalkOptionError('the corpus walk needs an output directory');
      return corpusVisitor(stores.store, options.corpus);
    case 'compression-benefit':
      return compressionVisitor(stores.store, options.compression);
  }
}
