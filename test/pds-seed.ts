/**
 * Sample accounts with realistic app.bsky content (profiles with avatars, posts with images,
 * replies, likes, follows, reposts, and one big account): what the tests and the demo
 * (`repowalk demo`) fill the reference PDS with.
 */
import { deflateSync, crc32 } from 'node:zlib';
import type { PdsTarget, RecordValue } from './xrpc.ts';
import { applyWrites, createAccount, createRecord, putRecord, uploadBlob, type TestAccount, type Write, type WrittenRecord } from './pds-fixtures.ts';

/** A valid RGB PNG of one colour, with a few pixels varied by `seed` so each image (and its
 *  CID) is distinct. */
export function pngBytes(width = 8, height = 8, seed = 0): Uint8Array {
  const chunk = (type: string, data: Buffer): Buffer => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const p = row + 1 + x * 3;
      raw[p] = (seed * 67 + x * 16) & 0xff;
      raw[p + 1] = (seed * 131 + y * 16) & 0xff;
      raw[p + 2] = (seed * 29 + 128) & 0xff;
    }
  }
  return new Uint8Array(
    Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', deflateSync(raw)),
      chunk('IEND', Buffer.alloc(0)),
    ]),
  );
}

export interface SeedOptions {
  /** Records in the big account (default 5000; 0 skips it). */
  bigAccountRecords?: number;
  /** Prefix for handles, so a PDS can be seeded more than once (default ''). */
  prefix?: string;
  /** Writes per applyWrites call for the big account (max 200). */
  batchSize?: number;
}

export interface SampleAccounts {
  /** alice, bob, carol: profiles with avatars, posts (some with images, a reply), likes,
   *  follows and a repost; `big`: a profile and `bigAccountRecords` posts. */
  alice: TestAccount;
  bob: TestAccount;
  carol: TestAccount;
  big: TestAccount | undefined;
  all: TestAccount[];
  /** Every blob referenced by a record: owner DID and CID. */
  blobs: Array<{ did: string; cid: string; size: number }>;
  /** Records written per DID. */
  recordCounts: Record<string, number>;
  timings: { totalMs: number; bigAccountMs: number; bigAccountRecords: number };
}

/** Creates a few accounts with realistic app.bsky content and one big account. */
export async function seedSampleAccounts(pds: PdsTarget, opts: SeedOptions = {}): Promise<SampleAccounts> {
  const started = performance.now();
  const prefix = opts.prefix ?? '';
  const bigCount = opts.bigAccountRecords ?? 5000;
  const batchSize = Math.min(opts.batchSize ?? 200, 200);
  const names = ['alice', 'bob', 'carol'] as const;
  const blobs: SampleAccounts['blobs'] = [];
  const recordCounts: Record<string, number> = {};
  const count = (did: string, n = 1) => (recordCounts[did] = (recordCounts[did] ?? 0) + n);
  let t = Date.parse('2024-01-01T00:00:00Z');
  const at = () => new Date((t += 61_000)).toISOString();
  let seed = 1;

  const people: TestAccount[] = [];
  for (const name of names) people.push(await createAccount(pds, `${prefix}${name}`));
  const posts = new Map<string, WrittenRecord[]>();

  for (const [i, acct] of people.entries()) {
    const avatarBytes = pngBytes(16, 16, seed++);
    const avatar = await uploadBlob(acct, avatarBytes, 'image/png');
    blobs.push({ did: acct.did, cid: avatar.ref.$link, size: avatar.size });
    await putRecord(acct, 'app.bsky.actor.profile', 'self', {
      displayName: names[i]!.replace(/^./, (c) => c.toUpperCase()),
      description: `Sample account ${names[i]} for repowalk tests.`,
      avatar,
    });
    count(acct.did);
    const mine: WrittenRecord[] = [];
    for (let p = 0; p < 5; p++) {
      const record: RecordValue = { text: `${names[i]} post ${p}: hello from the test PDS`, createdAt: at(), langs: ['en'] };
      if (p % 2 === 1) {
        const image = await uploadBlob(acct, pngBytes(24, 16, seed++), 'image/png');
        blobs.push({ did: acct.did, cid: image.ref.$link, size: image.size });
        record.embed = {
          $type: 'app.bsky.embed.images',
          images: [{ image, alt: `image ${p} of ${names[i]}`, aspectRatio: { width: 24, height: 16 } }],
        };
      }
      mine.push(await createRecord(acct, 'app.bsky.feed.post', record));
      count(acct.did);
    }
    posts.set(acct.did, mine);
  }

  for (const [i, acct] of people.entries()) {
    const others = people.filter((o) => o !== acct);
    for (const other of others) {
      await createRecord(acct, 'app.bsky.graph.follow', { subject: other.did, createdAt: at() });
      count(acct.did);
      for (const post of (posts.get(other.did) ?? []).slice(0, 3)) {
        await createRecord(acct, 'app.bsky.feed.like', { subject: { uri: post.uri, cid: post.cid }, createdAt: at() });
        count(acct.did);
      }
    }
    const target = posts.get(others[0]!.did)![0]!;
    await createRecord(acct, 'app.bsky.feed.repost', { subject: { uri: target.uri, cid: target.cid }, createdAt: at() });
    await createRecord(acct, 'app.bsky.feed.post', {
      text: `${names[i]} replies`,
      createdAt: at(),
      reply: { root: { uri: target.uri, cid: target.cid }, parent: { uri: target.uri, cid: target.cid } },
    });
    count(acct.did, 2);
  }

  let big: TestAccount | undefined;
  let bigAccountMs = 0;
  if (bigCount > 0) {
    const bigStarted = performance.now();
    big = await createAccount(pds, `${prefix}big`);
    await putRecord(big, 'app.bsky.actor.profile', 'self', { displayName: 'Big', description: `${bigCount} posts` });
    count(big.did);
    for (let done = 0; done < bigCount; ) {
      const n = Math.min(batchSize, bigCount - done);
      const writes: Write[] = [];
      for (let k = 0; k < n; k++) {
        writes.push({
          action: 'create',
          collection: 'app.bsky.feed.post',
          value: { $type: 'app.bsky.feed.post', text: `post number ${done + k} of the big account`, createdAt: at() },
        });
      }
      await applyWrites(big, writes);
      done += n;
      count(big.did, n);
    }
    bigAccountMs = performance.now() - bigStarted;
  }

  return {
    alice: people[0]!,
    bob: people[1]!,
    carol: people[2]!,
    big,
    all: big ? [...people, big] : people,
    blobs,
    recordCounts,
    timings: { totalMs: performance.now() - started, bigAccountMs, bigAccountRecords: bigCount },
  };
}
