/**
 * Turns a repository CAR into a verified repository, or refuses it with a reason.
 */
import type { BlockMap } from './block-map.ts';
import { type CarCaps, type CarContents, DEFAULT_CAR_CAPS, readCar, readCarStream } from './car.ts';
import { cidFromString, isRepoCid } from './cid.ts';
import { readCommit, verifyCommitSignature } from './commit.ts';
import { MissingBlockError } from './errors.ts';
import { readMst } from './mst.ts';
import type { RecordList, RepoRecord } from './record-list.ts';
import type { DecodedSigningKey } from './signature.ts';

export interface RepoCaps extends CarCaps {
  /**
   * Highest MST root layer accepted. A key's layer costs 4^layer hashes to mine, so 32 is far
   * above any honest tree (a billion keys reach about layer 15) and bounds the recursion.
   */
  maxMstHeight: number;
}

export const DEFAULT_REPO_CAPS: RepoCaps = { ...DEFAULT_CAR_CAPS, maxMstHeight: 32 };

export interface VerifyOptions {
  /** The DID the repo must belong to. */
  did: string;
  /**
   * The atproto signing key from the DID document: `did:key:…` or a bare multikey, or the key as
   * the DID document's reader decoded it (nothing is then decoded again).
   */
  signingKey: string | DecodedSigningKey;
  caps?: Partial<RepoCaps>;
  /**
   * Check the blocks' hashes after returning, between the caller's other work: the repo comes
   * back with `blocksChecked`, and nothing of it is verified until that resolves. For an
   * importer that awaits it before it commits (`backfill/import.ts`); everything else is checked
   * before returning, and an error found there still gives way to a bad block, as eagerly.
   */
  deferBlockHashes?: boolean;
}

export interface VerifiedRepo {
  did: string;
  version: 3;
  rev: string;
  commitCid: string;
  /** CID of the MST root. */
  dataCid: string;
  /** The commit, every MST node and every record block; blocks nothing reaches are left out. */
  blocks: BlockMap;
  /**
   * Every record, in MST (path byte) order, as objects. From `verifyRepo` this is made on first
   * access and then kept: a caller that can read `recordList` instead holds no object per record.
   */
  records: RepoRecord[];
  /** CIDs of the MST nodes, parents before children (from `verifyRepo`, made on first access). */
  mstNodes: string[];
  /** The records, compactly (set by `verifyRepo`; a hand-made repo may have only `records`). */
  recordList?: RecordList;
  /** Indexes in `blocks` of the MST nodes, parents before children (set by `verifyRepo`). */
  mstNodeBlocks?: readonly number[];
  mstHeight: number;
  /** Bytes of CAR read. */
  carBytes: number;
  /** Blocks in the CAR that the commit does not reach (dropped from `blocks`). */
  unreachableBlocks: number;
  /**
   * Only with `deferBlockHashes`: settles once every block of the CAR has been checked against
   * its CID, or rejects with the BlockHashMismatchError an eager verify would have thrown. Until
   * it resolves the repo is not verified: nothing of it may be committed.
   */
  blocksChecked?: Promise<void>;
}

/**
 * Verifies a repository CAR: every block hashes to its CID; the root is a v3 commit of `did`
 * whose signature verifies with `signingKey`; the MST under it holds its invariants (sorted keys,
 * each on its layer, valid paths, height under the cap, canonical form); every MST node and
 * record block is present. Accepts the CAR bytes, or what `readCarStream` already read.
 *
 * @throws InvalidRepoError (a subclass: CarFormatError, CarTooLargeError, TooManyBlocksError,
 *   BlockHashMismatchError, MissingBlockError, CommitError, SignatureError, MstError) naming the
 *   cause; anything else thrown is a bug, not a bad repo. With `deferBlockHashes`, a
 *   BlockHashMismatchError comes from `blocksChecked` when nothing else is wrong.
 */
export async function verifyRepo(car: Uint8Array | CarContents, options: VerifyOptions): Promise<VerifiedRepo> {
  const caps = { ...DEFAULT_REPO_CAPS, ...options.caps };
  const contents = car instanceof Uint8Array ? readCar(car, caps, { deferHashes: options.deferBlockHashes }) : car;
  const { unchecked } = contents;
  let repo: VerifiedRepo;
  try {
    repo = await verifyContents(contents, options, caps);
  } catch (err) {
    // The structure was read from blocks not yet checked: a bad block is what is refused first.
    unchecked?.checkNow();
    throw err;
  }
  if (unchecked) {
    if (options.deferBlockHashes) {
      repo.blocksChecked = unchecked.inBackground();
      // Observed by the caller; this only keeps a failure nobody awaited from going unhandled.
      repo.blocksChecked.catch(() => {});
    } else {
      unchecked.checkNow();
    }
  }
  return repo;
}

async function verifyContents(contents: CarContents, options: VerifyOptions, caps: RepoCaps): Promise<VerifiedRepo> {
  const { root, rootBytes, blocks, bytes } = contents;
  // The root as bytes, as `cidFromString` gives them (only a repo's kind of CID), without its string.
  const rootCid = rootBytes !== undefined && isRepoCid(rootBytes, 0) ? rootBytes : cidFromString(root);
  const commit = readCommit(blocks, root, options.did, rootCid);
  await verifyCommitSignature(commit, root, options.signingKey);
  const reached = new Uint8Array(blocks.size);
  reached[indexOf(blocks, root, rootCid)] = 1;
  const dataIndex = indexOf(blocks, commit.data, commit.dataBytes);
  if (dataIndex < 0) throw new MissingBlockError(commit.data, 'mst-node');
  // An honest repo's keys are a fraction of its CAR (each record has a block of its own); twice
  // the CAR bounds what verify holds for them whatever the CAR spells.
  const mst = readMst(blocks, dataIndex, caps.maxMstHeight, reached, Math.max(2 * bytes, 1 << 20));
  const { records, nodes } = mst;
  // Nothing a PDS slips into the CAR beside the repository gets stored.
  const unreachableBlocks = blocks.size - reached.reduce((n, r) => n + r, 0);
  if (unreachableBlocks > 0) {
    // Deferred checks read the map's blocks by index, which dropping some renumbers: they are
    // done first (every block, reached or not, as an eager read checks them).
    contents.unchecked?.checkNow();
    const renumber = new Int32Array(blocks.size);
    for (let from = 0, to = 0; from < reached.length; from++) renumber[from] = reached[from] ? to++ : -1;
    blocks.retain(reached);
    records.renumberBlocks(renumber);
    for (let i = 0; i < nodes.length; i++) nodes[i] = renumber[nodes[i]!]!;
  }
  let recordObjects: RepoRecord[] | undefined;
  let nodeCids: string[] | undefined;
  return {
    did: commit.did,
    version: 3,
    rev: commit.rev,
    commitCid: root,
    dataCid: commit.data,
    blocks,
    get records() {
      return (recordObjects ??= records.toArray());
    },
    get mstNodes() {
      return (nodeCids ??= nodes.map((i) => blocks.cidStringAt(i)));
    },
    recordList: records,
    mstNodeBlocks: nodes,
    mstHeight: mst.height,
    carBytes: bytes,
    unreachableBlocks,
  };
}

/**
 * `verifyRepo` on a stream of CAR chunks (a `getRepo` response body); the byte cap stops the
 * download as soon as it is passed.
 *
 * @throws as `verifyRepo`
 */
export async function verifyRepoStream(chunks: AsyncIterable<Uint8Array>, options: VerifyOptions): Promise<VerifiedRepo> {
  const caps = { ...DEFAULT_REPO_CAPS, ...options.caps };
  return verifyRepo(await readCarStream(chunks, caps, { deferHashes: options.deferBlockHashes }), { ...options, caps });
}

function indexOf(blocks: BlockMap, cid: string, bytes = cidFromString(cid)): number {
  return bytes === undefined ? -1 : blocks.indexOf(bytes);
}
