/**
 * The compression-benefit walk: what zstd would save if blocks were stored compressed, per
 * node type. Every sampled block (and, when Blob nodes are walked, stored blob) is compressed
 * on its own at `level`, and counted in `compression.<Type>.{count,raw,zstd}`.
 *
 * Then the same with a dictionary per node type, to show what grouping blocks by type would
 * add: the first `trainSamples` blocks of a type are kept, a dictionary of `dictionarySize`
 * bytes is trained on them (`zstd-dict.ts`), and every later block of the type is compressed
 * with it and without: `compression.<Type>.dict.{count,raw,zstd,plain}`, where `plain` is the
 * dictionary-less size of those same blocks, so the two ratios compare like with like (the
 * training blocks themselves are left out of both). The dictionary's own size is
 * `compression.<Type>.dict.bytes`.
 *
 * The totals are sums and add up across pages. The dictionary figures depend on which blocks a
 * page trained on: a page retried from its heartbeat trains on other blocks than the first
 * attempt did, so they are estimates, not exact like the rest.
 */
import { constants, zstdCompressSync } from 'node:zlib';
import type { BlobStore } from '../../storage/blobstore/types.ts';
import { verifyContent } from '../../storage/keys.ts';
import type { Visitor, VisitContext } from '../engine.ts';
import type { NodeType } from '../schema.ts';
import type { StepData } from '../steps/context.ts';
import { trainDictionary } from './zstd-dict.ts';
import { unhandledNode } from '../nodes.ts';

export interface CompressionOptions {
  /** zstd level. Default 3 (zstd's default). */
  level?: number;
  /** Dictionary size in bytes; 0 turns the dictionary figures off. Default 16 KiB. */
  dictionarySize?: number;
  /** Blocks of a type to train its dictionary on. Default 1000. */
  trainSamples?: number;
}

interface TypeState {
  samples: Uint8Array[];
  dictionary: Uint8Array | null;
}

export function compressionVisitor(store: BlobStore, opts: CompressionOptions = {}): Visitor {
  const level = opts.level ?? 3;
  const dictSize = opts.dictionarySize ?? 16 * 1024;
  const trainSamples = opts.trainSamples ?? 1000;
  const params = { [constants.ZSTD_c_compressionLevel]: level };
  const state = new Map<NodeType, TypeState>();

  const measure = (type: NodeType, bytes: Uint8Array, ctx: VisitContext) => {
    const plain = zstdCompressSync(bytes, { params }).length;
    ctx.count(`compression.${type}.count`);
    ctx.count(`compression.${type}.raw`, bytes.length);
    ctx.count(`compression.${type}.zstd`, plain);
    if (dictSize <= 0) return;
    let s = state.get(type);
    if (!s) state.set(type, (s = { samples: [], dictionary: null }));
    if (s.dictionary === null) {
      // Copied: a view would keep a whole cached pack alive.
      s.samples.push(bytes.slice());
      if (s.samples.length >= trainSamples) {
        s.dictionary = trainDictionary(s.samples, dictSize);
        s.samples = [];
        ctx.count(`compression.${type}.dict.bytes`, s.dictionary.length);
      }
      return;
    }
    const withDict = zstdCompressSync(bytes, { params, dictionary: s.dictionary }).length;
    ctx.count(`compression.${type}.dict.count`);
    ctx.count(`compression.${type}.dict.raw`, bytes.length);
    ctx.count(`compression.${type}.dict.zstd`, withDict);
    ctx.count(`compression.${type}.dict.plain`, plain);
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
          if (data.bytes && data.hashOk) measure(v.node.type, data.bytes, ctx);
          return;
        }
        case 'Blob': {
          const row = (v.data as StepData['Blob']).row;
          if (row?.status !== 'present' || !row.key) return;
          const key = row.key;
          ctx.defer(async () => {
            const bytes = await store.get(key);
            if (bytes !== null && verifyContent(key, bytes).ok) measure('Blob', bytes, ctx);
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

export interface CompressionRow {
  type: string;
  count: number;
  raw: number;
  zstd: number;
  ratio: number;
  dict?: { count: number; raw: number; zstd: number; plain: number; ratio: number; plainRatio: number; bytes: number };
}

/** The compression counters of a walk's totals as one row per node type. */
export function compressionTable(counters: Record<string, number>): CompressionRow[] {
  const types = new Set(Object.keys(counters).flatMap((k) => (k.startsWith('compression.') ? [k.split('.')[1]!] : [])));
  return [...types].map((type) => {
    const c = (name: string) => counters[`compression.${type}.${name}`] ?? 0;
    const row: CompressionRow = { type, count: c('count'), raw: c('raw'), zstd: c('zstd'), ratio: ratio(c('raw'), c('zstd')) };
    if (c('dict.count') > 0) {
      row.dict = {
        count: c('dict.count'),
        raw: c('dict.raw'),
        zstd: c('dict.zstd'),
        plain: c('dict.plain'),
        ratio: ratio(c('dict.raw'), c('dict.zstd')),
        plainRatio: ratio(c('dict.raw'), c('dict.plain')),
        bytes: c('dict.bytes'),
      };
    }
    return row;
  });
}

function ratio(raw: number, compressed: number): number {
  return compressed === 0 ? 0 : Math.round((raw / compressed) * 1000) / 1000;
}
