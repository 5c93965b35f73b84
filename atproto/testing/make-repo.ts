/**
 * Real, signed repositories for tests and benchmarks, built by the reference implementation
 * (`@atproto/repo`), so what our verifier accepts is what the network produces rather than what
 * our own code thinks a repo is.
 *
 * Records look like Bluesky's (posts, some with image blobs and replies; likes and reposts with
 * strong refs; follows) and are deterministic in their index, so two calls with the same
 * parameters give the same records. Large repos take seconds to build: `makeRepoCached` keeps
 * them on disk, keyed by the parameters.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import * as TID from '@atcute/tid';
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto';
import type { Keypair } from '@atproto/crypto';
import { blocksToCarFile, cborToLexRecord, Repo, MemoryBlockstore } from '@atproto/repo';
import { readCarBlocks } from './car-edit.ts';

export type KeyType = 'secp256k1' | 'p256';

/** A signing keypair that can be written to the cache and read back. */
export type TestKeypair = Keypair & { export(): Promise<Uint8Array> };

export interface RecordInput {
  collection: string;
  rkey: string;
  /** The record as `@atcute/cbor` encodes it (CID links as `CID.toCidLink(…)`). */
  value: Record<string, unknown>;
}

export interface MakeRepoOptions {
  did?: string;
  /** How many generated records, or the records themselves. */
  records: number | RecordInput[];
  keyType?: KeyType;
  /** Sign with this key instead of a new one. */
  keypair?: TestKeypair;
  /** Collections generated records cycle through. */
  collections?: string[];
  /** Commit revision (a TID); a fixed one by default, so equal inputs give equal CARs. */
  rev?: string;
}

export interface MadeRecord {
  collection: string;
  rkey: string;
  cid: string;
  path: string;
}

export interface MadeRepo {
  car: Uint8Array;
  did: string;
  /** The public key as `did:key:…`, as a DID document names it. */
  signingKey: string;
  keypair: TestKeypair;
  /** In path (MST) order. */
  records: MadeRecord[];
  commitCid: string;
  dataCid: string;
  rev: string;
}

export const DEFAULT_COLLECTIONS = ['app.bsky.feed.post', 'app.bsky.feed.like', 'app.bsky.graph.follow', 'app.bsky.feed.repost'];
export const DEFAULT_DID = 'did:plc:repowalktest0000000000000';
const DEFAULT_REV = TID.create(1_700_000_000_000_000, 0);

export async function newKeypair(keyType: KeyType = 'secp256k1'): Promise<TestKeypair> {
  return keyType === 'p256' ? P256Keypair.create({ exportable: true }) : Secp256k1Keypair.create({ exportable: true });
}

/** Builds and signs a repository with `@atproto/repo`, and exports it as a CAR. */
export async function makeRepo(options: MakeRepoOptions): Promise<MadeRepo> {
  const did = options.did ?? DEFAULT_DID;
  const keypair = options.keypair ?? (await newKeypair(options.keyType));
  const inputs = typeof options.records === 'number' ? generateRecords(options.records, options.collections ?? DEFAULT_COLLECTIONS) : options.records;

  const records: MadeRecord[] = [];
  const writes = inputs.map((input) => {
    const bytes = CBOR.encode(input.value);
    const path = `${input.collection}/${input.rkey}`;
    records.push({ collection: input.collection, rkey: input.rkey, cid: cidOf(0x71, bytes), path });
    return { action: 'create' as const, collection: input.collection, rkey: input.rkey, record: cborToLexRecord(bytes) };
  });
  records.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

  const commit = await Repo.formatInitCommit(new MemoryBlockstore(), did, keypair, writes as never, options.rev ?? DEFAULT_REV);
  const car = await blocksToCarFile(commit.cid, commit.newBlocks);
  const { root, blocks } = readCarBlocks(car);
  const data = (CBOR.decode(blocks.get(root)!) as { data: CID.CidLink }).data.$link;
  return { car, did, signingKey: keypair.did(), keypair, records, commitCid: root, dataCid: data, rev: commit.rev };
}

/**
 * `makeRepo` for generated records, kept on disk under `$REPOWALK_CACHE_DIR/test-repos` (by
 * default `~/.cache/repowalk/test-repos`), keyed by the parameters. The signing key is stored
 * with it: these are test keys that sign nothing else.
 */
export async function makeRepoCached(options: CachedRepoOptions): Promise<MadeRepo> {
  const { params, dir, carPath, metaPath } = cachePaths(options);
  if (existsSync(carPath) && existsSync(metaPath)) {
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as Omit<MadeRepo, 'car' | 'keypair'> & { privateKey: string };
    const key = Buffer.from(meta.privateKey, 'hex');
    const keypair = params.keyType === 'p256' ? await P256Keypair.import(key, { exportable: true }) : await Secp256k1Keypair.import(key, { exportable: true });
    const { privateKey: _, ...rest } = meta;
    return { ...rest, car: new Uint8Array(readFileSync(carPath)), keypair };
  }
  const repo = await makeRepo({ did: params.did, records: params.records, keyType: params.keyType, collections: params.collections });
  mkdirSync(dir, { recursive: true });
  const { car, keypair, ...meta } = repo;
  // Write then rename, so a concurrent or interrupted run never reads half a file.
  writeFileSync(`${metaPath}.tmp`, JSON.stringify({ ...meta, privateKey: Buffer.from(await keypair.export()).toString('hex') }));
  writeFileSync(`${carPath}.tmp`, car);
  renameSync(`${carPath}.tmp`, carPath);
  renameSync(`${metaPath}.tmp`, metaPath);
  return repo;
}

export interface CachedRepoOptions {
  did?: string;
  records: number;
  keyType?: KeyType;
  collections?: string[];
}

/** Where `makeRepoCached` keeps the repo for these options: the CAR and a JSON of the rest. */
export function cachePaths(options: CachedRepoOptions) {
  const params = {
    v: 1,
    did: options.did ?? DEFAULT_DID,
    records: options.records,
    keyType: options.keyType ?? ('secp256k1' as KeyType),
    collections: options.collections ?? DEFAULT_COLLECTIONS,
  };
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'repowalk'), 'test-repos');
  const name = createHash('sha256').update(JSON.stringify(params)).digest('hex').slice(0, 16);
  return { params, dir, carPath: join(dir, `${name}.car`), metaPath: join(dir, `${name}.json`) };
}

/** `n` records cycling through `collections`, with TID record keys. */
export function generateRecords(n: number, collections: string[] = DEFAULT_COLLECTIONS): RecordInput[] {
  const records: RecordInput[] = [];
  for (let i = 0; i < n; i++) {
    const collection = collections[i % collections.length]!;
    // One TID per record, a millisecond apart, so keys spread over the tree as real ones do.
    const rkey = TID.create(1_690_000_000_000_000 + i * 1000, i % 1024);
    records.push({ collection, rkey, value: recordValue(collection, i) });
  }
  return records;
}

const LOREM =
  'atproto repositories are signed merkle search trees of records; a mirror verifies every block, ' +
  'every signature and every invariant before it stores anything, and proves it later. ';

/** A record of `collection` that looks like a real one; deterministic in `i`. */
export function recordValue(collection: string, i: number): Record<string, unknown> {
  const createdAt = new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString();
  switch (collection) {
    case 'app.bsky.feed.post': {
      const post: Record<string, unknown> = {
        $type: collection,
        text: `${i}: ${LOREM.slice(0, 40 + ((i * 37) % 120))}`,
        langs: ['en'],
        createdAt,
      };
      if (i % 10 === 0) {
        post.embed = {
          $type: 'app.bsky.embed.images',
          images: [{ alt: `image ${i}`, image: blobRef(`image ${i}`, 'image/jpeg', 50_000 + i) }],
        };
      }
      if (i % 7 === 3) {
        const parent = strongRef(`did:plc:other${i % 100}`, 'app.bsky.feed.post', i);
        post.reply = { root: parent, parent };
      }
      return post;
    }
    case 'app.bsky.feed.like':
    case 'app.bsky.feed.repost':
      return { $type: collection, subject: strongRef(`did:plc:other${i % 100}`, 'app.bsky.feed.post', i), createdAt };
    case 'app.bsky.graph.follow':
      return { $type: collection, subject: `did:plc:followed${i}`, createdAt };
    default:
      return { $type: collection, n: i, createdAt };
  }
}

/** A current-form blob ref to a blob whose bytes are `content`. */
export function blobRef(content: string, mimeType: string, size: number): Record<string, unknown> {
  return { $type: 'blob', ref: CID.toCidLink(CID.fromString(cidOf(0x55, new TextEncoder().encode(content)))), mimeType, size };
}

/** A strong ref to a made-up record of another repo. */
export function strongRef(did: string, collection: string, i: number): { uri: string; cid: string } {
  return {
    uri: `at://${did}/${collection}/${TID.create(1_680_000_000_000_000 + i * 1000, 7)}`,
    cid: cidOf(0x71, new TextEncoder().encode(`target ${did} ${i}`)),
  };
}

/** CID string of `bytes` with `codec` (0x71 dag-cbor, 0x55 raw). */
export function cidOf(codec: 0x71 | 0x55, bytes: Uint8Array): string {
  return CID.toString(CID.fromDigest(codec, createHash('sha256').update(bytes).digest()));
}
