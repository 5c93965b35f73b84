/**
 * A generated firehose for the sync bench: `repos` repos of `commits` signed commits each (one
 * record created per commit, formatted as the reference implementation formats them: sync v1.1
 * with prevData and, as blocks, the commit, the record and every MST node the inversion reads),
 * as subscribeRepos frames interleaved across repos (each repo's first frame, then one commit of
 * every repo in turn), cached on disk (length-prefixed frames, keyed by the parameters and
 * GENERATOR_VERSION) because it takes a while to build.
 *
 * The trees are built with `@atcute/mst` (the reference the inversion is tested against) and the
 * proof is what it reads to invert the commit's op on the new tree; commits are signed with
 * libsecp256k1 when its binding is installed (`@atproto/crypto` otherwise: ~10 times the CPU).
 * Repos are split across worker threads (one per core), each building its repos whole.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { availableParallelism, homedir } from 'node:os';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import * as TID from '@atcute/tid';
import { MemoryBlockStore, MSTNode, NodeStore, NodeWrangler } from '@atcute/mst';
import { Secp256k1Keypair } from '@atproto/crypto';

/** Bumped whenever the frames generated for the same parameters change (the cache key has it). */
export const GENERATOR_VERSION = 2;

export interface FirehoseMeta {
  /** The cache file: length-prefixed frames in seq order (seq 1 first). */
  file: string;
  frames: number;
  /** The did:key of the one key that signs every repo. */
  signingKey: string;
  dids: string[];
}

const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
const base32 = (v: number, len: number) => {
  let s = '';
  for (; s.length < len; v = Math.floor(v / 32)) s = B32[v % 32] + s;
  return s;
};
const didOf = (r: number) => `did:plc:benchsync${'a'.repeat(5)}${base32(r, 10)}`;
/** Revs: one microsecond apart per commit, from a fixed start, so equal parameters give equal revs. */
const REV_START_US = 1_750_000_000_000_000;

export function firehoseCacheFile(repos: number, commits: number): string {
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(homedir(), '.cache', 'repowalk'), 'test-repos');
  return join(dir, `firehose-v${GENERATOR_VERSION}-${repos}x${commits}.bin`);
}

/** The cached firehose's description, generating it first when it is not on disk. */
export async function generatedFirehose(repos: number, commits: number, log: (l: string) => void): Promise<FirehoseMeta> {
  if (!(Number.isInteger(repos) && repos > 0 && Number.isInteger(commits) && commits >= 0)) throw new Error(`sync firehose: repos must be ≥ 1 and commits ≥ 0 (got ${repos} × ${commits})`);
  const file = firehoseCacheFile(repos, commits);
  const meta = `${file}.json`;
  if (existsSync(file) && existsSync(meta)) return { file, ...(JSON.parse(readFileSync(meta, 'utf8')) as Omit<FirehoseMeta, 'file'>) };
  const total = repos * (commits + 1);
  const threads = Math.max(1, Math.min(availableParallelism(), repos));
  log(`sync: generating ${repos} repos × ${commits} signed commits = ${total} frames on ${threads} threads (once; cached in ${file})`);
  const t0 = performance.now();
  const keypair = await Secp256k1Keypair.create({ exportable: true });
  const privateKey = await keypair.export();
  const frames: (Uint8Array | undefined)[] = new Array(total);
  let done = 0;
  let lastLog = 0;
  await Promise.all(
    Array.from({ length: threads }, (_, t) => {
      const from = Math.floor((repos * t) / threads);
      const to = Math.floor((repos * (t + 1)) / threads);
      return new Promise<void>((resolve, reject) => {
        const worker = new Worker(new URL(import.meta.url), { workerData: { firehoseSlice: { from, to, repos, commits, privateKey } }, name: 'firehose-gen' });
        worker.on('message', (m: { bytes: Uint8Array; seqs: number[]; lengths: number[] }) => {
          let o = 0;
          m.seqs.forEach((seq, i) => {
            frames[seq - 1] = m.bytes.subarray(o, o + m.lengths[i]!);
            o += m.lengths[i]!;
          });
          done += m.seqs.length;
          if (done - lastLog >= 20_000) {
            lastLog = done;
            log(`sync: generated ${done} of ${total} frames (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
          }
        });
        worker.once('error', reject);
        worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`firehose generator thread exited with code ${code}`))));
      });
    }),
  );
  mkdirSync(join(file, '..'), { recursive: true });
  const fd = openSync(`${file}.tmp`, 'w');
  try {
    const prefix = Buffer.alloc(4);
    for (let i = 0; i < total; i++) {
      const f = frames[i];
      if (!f) throw new Error(`sync firehose: frame ${i + 1} was not generated`);
      prefix.writeUInt32BE(f.length);
      writeSync(fd, prefix);
      writeSync(fd, f);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(`${file}.tmp`, file);
  const dids = Array.from({ length: repos }, (_, r) => didOf(r));
  const described = { frames: total, signingKey: keypair.did(), dids };
  writeFileSync(meta, JSON.stringify(described));
  log(`sync: generated ${total} frames in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return { file, ...described };
}

/** The cached firehose's frames, as views of one buffer read from `file`. */
export function readFirehose(file: string): Uint8Array[] {
  const buf = readFileSync(file);
  const frames: Uint8Array[] = [];
  for (let o = 0; o < buf.length; ) {
    const len = buf.readUInt32BE(o);
    frames.push(buf.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return frames;
}

interface Slice {
  from: number;
  to: number;
  repos: number;
  commits: number;
  privateKey: Uint8Array;
}

/** Signs like `@atproto/crypto`'s Secp256k1Keypair (sha-256, compact, low-S), natively when it can. */
function signer(privateKey: Uint8Array): (msg: Uint8Array) => Promise<Uint8Array> {
  try {
    const lib = createRequire(import.meta.url)('secp256k1/bindings.js') as { ecdsaSign(msg32: Uint8Array, key: Uint8Array): { signature: Uint8Array } };
    return async (msg) => {
      const out = lib.ecdsaSign(createHash('sha256').update(msg).digest(), privateKey);
      return out.signature; // libsecp256k1's signatures are low-S
    };
  } catch {
    const kp = Secp256k1Keypair.import(privateKey);
    return async (msg) => (await kp).sign(msg);
  }
}

/** A CAR v1 of `blocks` (CID string → bytes) rooted at `root`. */
function carOf(root: string, blocks: Map<string, Uint8Array>): Uint8Array {
  const parts: Uint8Array[] = [];
  const header = CBOR.encode({ version: 1, roots: [{ $link: root }] });
  parts.push(varint(header.length), header);
  for (const [cid, bytes] of blocks) {
    const c = CID.fromString(cid).bytes;
    parts.push(varint(c.length + bytes.length), c, bytes);
  }
  return Buffer.concat(parts);
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Uint8Array.from(out);
}

/** A store that records the CIDs read from it (the inversion's proof). */
class Recording extends MemoryBlockStore {
  read = new Set<string>();
  override get(cid: string) {
    this.read.add(cid);
    return super.get(cid);
  }
}

/** One generator thread: repos [from, to), each whole, posted back one repo at a time. */
async function generateSlice({ from, to, repos, commits, privateKey }: Slice): Promise<void> {
  const sign = signer(privateKey);
  const time = new Date(REV_START_US / 1000).toISOString();
  const header = CBOR.encode({ op: 1, t: '#commit' });
  const empty = MSTNode.empty();
  const emptyCid = (await empty.cid()).$link;
  const emptyBytes = await empty.serialize();
  const commitBlock = async (did: string, data: string, rev: string) => {
    const unsigned = { did, version: 3, data: { $link: data }, rev, prev: null };
    const bytes = CBOR.encode({ ...unsigned, sig: CBOR.toBytes(await sign(CBOR.encode(unsigned))) });
    return { cid: CID.toString(await CID.create(0x71, bytes)), bytes };
  };
  const frame = (seq: number, body: Record<string, unknown>) => Buffer.concat([header, CBOR.encode({ seq, time, rebase: false, tooBig: false, blobs: [], ...body })]);
  for (let r = from; r < to; r++) {
    const did = didOf(r);
    const out: Uint8Array[] = [];
    const seqs: number[] = [];
    const store = new Recording();
    const wrangler = new NodeWrangler(new NodeStore(store));
    await store.put(emptyCid, emptyBytes);
    let root = emptyCid;
    let rev = TID.create(REV_START_US, r % 1024);
    const init = await commitBlock(did, root, rev);
    seqs.push(r + 1);
    out.push(frame(r + 1, { repo: did, rev, since: null, commit: { $link: init.cid }, blocks: CBOR.toBytes(carOf(init.cid, new Map([[init.cid, init.bytes], [emptyCid, emptyBytes]]))), ops: [] }));
    for (let c = 0; c < commits; c++) {
      const rkey = `3l${base32(c, 11)}`;
      const path = `app.bsky.feed.post/${rkey}`;
      const record = CBOR.encode({ $type: 'app.bsky.feed.post', text: `post ${c} of ${did}`, createdAt: time });
      const recordCid = CID.toString(await CID.create(0x71, record));
      const prevData = root;
      root = await wrangler.putRecord(root, path, { $link: recordCid });
      // The proof: the nodes the reference reads to take the op back on the new tree (every
      // node the op made is on that path, so the new tree's new nodes are among them).
      store.read.clear();
      const back = await new NodeWrangler(new NodeStore(store)).deleteRecord(root, path);
      if (back !== prevData) throw new Error(`sync firehose: ${did} commit ${c} does not invert to its prevData`);
      const since = rev;
      rev = TID.create(REV_START_US + (c + 1) * 1000, r % 1024);
      const commit = await commitBlock(did, root, rev);
      const blocks = new Map<string, Uint8Array>([[commit.cid, commit.bytes]]);
      for (const cid of store.read) blocks.set(cid, store.blocks.get(cid)!);
      blocks.set(recordCid, record);
      const seq = repos + c * repos + r + 1;
      seqs.push(seq);
      out.push(
        frame(seq, {
          repo: did, rev, since, commit: { $link: commit.cid }, prevData: { $link: prevData },
          blocks: CBOR.toBytes(carOf(commit.cid, blocks)),
          ops: [{ action: 'create', path, cid: { $link: recordCid }, prev: null }],
        }),
      );
    }
    // A buffer of its own (not Node's shared pool), so it can be transferred.
    const bytes = new Uint8Array(out.reduce((n, f) => n + f.length, 0));
    let o = 0;
    for (const f of out) (bytes.set(f, o), (o += f.length));
    parentPort!.postMessage({ bytes, seqs, lengths: out.map((f) => f.length) }, [bytes.buffer]);
  }
}

if (!isMainThread && (workerData as { firehoseSlice?: Slice } | null)?.firehoseSlice) {
  await generateSlice((workerData as { firehoseSlice: Slice }).firehoseSlice);
}

/**
 * Run as a child process of bench/sync.ts (`fork`): the loopback upstream, in a process of its
 * own so that the consumer's CPU figures are the consumer's. Serves the cached firehose to every
 * connection as fast as the reader takes it (WebSocket backpressure), answers the parent with its
 * port, and on request with the send time of each frame (by seq, epoch ms) and its own CPU.
 */
if (isMainThread && import.meta.main && process.argv[2] === '--generate') {
  // `node bench/sync-firehose.ts --generate REPOS COMMITS`: only builds the cache (bench/sync.ts
  // runs this in a process of its own, so that the consumer's RSS starts without the frames).
  await generatedFirehose(Number(process.argv[3]), Number(process.argv[4]), (l) => console.error(l));
} else if (isMainThread && import.meta.main) {
  const { createServer } = await import('node:http');
  const { WebSocketServer } = await import('ws');
  const frames = readFirehose(process.argv[2]!);
  const sentAt = new Float64Array(frames.length + 2);
  const server = createServer();
  const wss = new WebSocketServer({ server });
  const cpu0 = process.cpuUsage();
  wss.on('connection', (ws) => {
    void (async () => {
      for (let i = 0; i < frames.length; i++) {
        // Backpressure: wait while the consumer has not taken what was sent.
        while (ws.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
        sentAt[i + 1] = performance.timeOrigin + performance.now();
        ws.send(frames[i]!);
      }
    })();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  process.send!({ port: (server.address() as { port: number }).port });
  // The bench gone (finished, or failed before asking for the report): so is its upstream.
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: { report?: boolean }) => {
    if (!m.report) return;
    const cpu = process.cpuUsage(cpu0);
    process.send!({ sentAt: Array.from(sentAt), cpuMs: (cpu.user + cpu.system) / 1000 }, () => process.disconnect());
  });
}
