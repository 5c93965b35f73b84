/**
 * A generated firehose for the sync bench: `repos` repos of `commits` signed commits each (one
 * record created per commit, as the reference implementation formats them: sync v1.1 with
 * prevData and the proof blocks), as subscribeRepos frames interleaved across repos, cached on
 * disk (length-prefixed frames) because signing them takes a while.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as CBOR from '@atcute/cbor';
import { Secp256k1Keypair } from '@atproto/crypto';
import { BlockMap, blocksToCarFile, cborToLexRecord, MemoryBlockstore, Repo } from '@atproto/repo';

export interface Firehose {
  frames: Uint8Array[];
  /** did → did:key of the one key that signs every repo. */
  signingKey: string;
  dids: string[];
}

const VERSION = 1;
const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

export async function generatedFirehose(repos: number, commits: number, log: (l: string) => void): Promise<Firehose> {
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(homedir(), '.cache', 'repowalk'), 'test-repos');
  const file = join(dir, `firehose-v${VERSION}-${repos}x${commits}.bin`);
  const meta = `${file}.json`;
  if (existsSync(file) && existsSync(meta)) {
    const buf = readFileSync(file);
    const frames: Uint8Array[] = [];
    for (let o = 0; o < buf.length; ) {
      const len = buf.readUInt32BE(o);
      frames.push(buf.subarray(o + 4, o + 4 + len));
      o += 4 + len;
    }
    return { frames, ...(JSON.parse(readFileSync(meta, 'utf8')) as { signingKey: string; dids: string[] }) };
  }
  log(`sync: generating ${repos} repos × ${commits} signed commits (once; cached in ${file})`);
  const keypair = await Secp256k1Keypair.create({ exportable: true });
  const dids: string[] = [];
  const state: { repo: Repo; did: string }[] = [];
  const frames: Uint8Array[] = [];
  let seq = 1;
  const time = new Date().toISOString();
  const frame = (body: Record<string, unknown>) => Buffer.concat([CBOR.encode({ op: 1, t: '#commit' }), CBOR.encode({ seq: seq++, time, rebase: false, tooBig: false, blobs: [], ...body })]);
  for (let r = 0; r < repos; r++) {
    let tail = '';
    for (let v = r; tail.length < 10; v = Math.floor(v / 32)) tail = B32[v % 32] + tail;
    const did = `did:plc:benchsync${'a'.repeat(5)}${tail}`;
    dids.push(did);
    const storage = new MemoryBlockstore();
    const init = await Repo.formatInitCommit(storage, did, keypair, []);
    const repo = await Repo.createFromCommit(storage, init);
    state.push({ repo, did });
    frames.push(frame({ repo: did, rev: init.rev, since: null, commit: { $link: init.cid.toString() }, blocks: CBOR.toBytes(await blocksToCarFile(init.cid, init.newBlocks)), ops: [] }));
  }
  for (let c = 0; c < commits; c++) {
    for (const s of state) {
      let rkey = '';
      for (let v = c; rkey.length < 11; v = Math.floor(v / 32)) rkey = B32[v % 32] + rkey;
      rkey = `3l${rkey}`;
      const value = { $type: 'app.bsky.feed.post', text: `post ${c} of ${s.did}`, createdAt: time };
      const prevData = s.repo.commit.data.toString();
      const data = await s.repo.formatCommit({ action: 'create' as never, collection: 'app.bsky.feed.post', rkey, record: cborToLexRecord(CBOR.encode(value)) } as never, keypair);
      s.repo = await s.repo.applyCommit(data);
      const recordCid = (await s.repo.data.get(`app.bsky.feed.post/${rkey}`))!.toString();
      const blocks = new BlockMap();
      blocks.addMap(data.newBlocks);
      blocks.addMap(data.relevantBlocks);
      frames.push(
        frame({
          repo: s.did, rev: data.rev, since: data.since, commit: { $link: data.cid.toString() }, prevData: { $link: prevData },
          blocks: CBOR.toBytes(await blocksToCarFile(data.cid, blocks)),
          ops: [{ action: 'create', path: `app.bsky.feed.post/${rkey}`, cid: { $link: recordCid }, prev: null }],
        }),
      );
    }
    if (c % 10 === 9) log(`sync: generated ${frames.length} frames`);
  }
  mkdirSync(dir, { recursive: true });
  const out = Buffer.concat(frames.flatMap((f) => [lengthPrefix(f.length), f]));
  writeFileSync(`${file}.tmp`, out);
  renameSync(`${file}.tmp`, file);
  writeFileSync(meta, JSON.stringify({ signingKey: keypair.did(), dids }));
  return { frames, signingKey: keypair.did(), dids };
}

function lengthPrefix(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Run as a child process of bench/sync.ts (`fork`): the loopback upstream, in a process of its
 * own so that the consumer's CPU figures are the consumer's. Serves the cached firehose to every
 * connection as fast as the reader takes it (WebSocket backpressure), answers the parent with its
 * port, and on request with the send time of each frame (by seq, epoch ms) and its own CPU.
 */
if (import.meta.main) {
  const { createServer } = await import('node:http');
  const { WebSocketServer } = await import('ws');
  const repos = Number(process.argv[2]);
  const commits = Number(process.argv[3]);
  const hose = await generatedFirehose(repos, commits, (l) => console.error(l));
  const sentAt = new Float64Array(hose.frames.length + 2);
  const server = createServer();
  const wss = new WebSocketServer({ server });
  const cpu0 = process.cpuUsage();
  wss.on('connection', (ws) => {
    void (async () => {
      for (let i = 0; i < hose.frames.length; i++) {
        // Backpressure: wait while the consumer has not taken what was sent.
        while (ws.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
        sentAt[i + 1] = performance.timeOrigin + performance.now();
        ws.send(hose.frames[i]!);
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
