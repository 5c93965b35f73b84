/**
 * The corpus walk: the bytes of every sampled block (commits, MST nodes, records, block index
 * rows) and, when Blob nodes are walked, of every sampled stored blob, written under
 * `outputDir` in the layout of `corpus-path.ts`, for study with shell tools. Only bytes that
 * verified against their CID are written. Files are written whole under a temporary name and
 * renamed, so an interrupted walk leaves no half file and a repeated one rewrites the same.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { BlobStore } from '../../storage/blobstore/types.ts';
import { verifyContent } from '../../storage/keys.ts';
import { cidFromString } from '../../atproto/cid.ts';
import type { Visitor, VisitContext } from '../engine.ts';
import { limiter } from '../limit.ts';
import { nodeKey, unhandledNode } from '../nodes.ts';
import type { StepData } from '../steps/context.ts';
import { corpusPath } from './corpus-path.ts';

export interface CorpusOptions {
  outputDir: string;
  /** Files written at once. Default 16. */
  concurrency?: number;
}

export function corpusVisitor(store: BlobStore, opts: CorpusOptions): Visitor {
  const limit = limiter(opts.concurrency ?? 16);
  const dump = (rel: string, bytes: Uint8Array, ctx: VisitContext) => {
    ctx.defer(() =>
      limit(async () => {
        const path = join(opts.outputDir, ...rel.split('/'));
        await mkdir(dirname(path), { recursive: true });
        const tmp = `${path}.${randomBytes(6).toString('hex')}~`;
        await writeFile(tmp, bytes);
        await rename(tmp, path);
        ctx.count('corpus.files');
        ctx.count('corpus.bytes', bytes.length);
      }),
    );
  };
  return {
    needs: { blockBytes: true },
    visit(v, ctx) {
      if (!ctx.sampled) return;
      switch (v.node.type) {
        case 'Commit':
        case 'MstNode':
        case 'Record':
        case 'Block': {
          const data = v.data as StepData['Block'];
          if (!data.bytes || !data.hashOk) return;
          dump(corpusPath(v.node.type, ctx.path, nodeKey(v.node), v.node.cid.subarray(4)), data.bytes, ctx);
          return;
        }
        case 'Blob': {
          const row = (v.data as StepData['Blob']).row;
          if (row?.status !== 'present' || !row.key) return;
          const key = row.key;
          const cid = v.node.cid;
          const path = ctx.path;
          ctx.defer(async () => {
            const bytes = await store.get(key);
            if (bytes === null || !verifyContent(key, bytes).ok) return;
            dump(corpusPath('Blob', path, cid, cidFromString(cid)?.subarray(4) ?? createHash('sha256').update(cid).digest()), bytes, ctx);
          });
          return;
        }
        case 'Repo':
        case 'RecordRow':
        case 'Event':
        case 'Pack':
          return;
        default:
          return unhandledNode(v.node);
      }
    },
  };
}
