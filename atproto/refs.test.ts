import { describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import { RecordError } from './errors.ts';
import { extractRefs } from './refs.ts';
import { blobRef, cidOf, recordValue, strongRef } from './testing/make-repo.ts';

const LIKED = strongRef('did:plc:alice', 'app.bsky.feed.post', 1);
const IMAGE = blobRef('image bytes', 'image/png', 1234);
const LEGACY_CID = cidOf(0x55, new TextEncoder().encode('legacy image'));

describe('extractRefs', () => {
  it('finds a strong ref (a like)', () => {
    const refs = extractRefs(CBOR.encode({ $type: 'app.bsky.feed.like', subject: LIKED, createdAt: '2024-01-01T00:00:00.000Z' }));
    expect(refs.blobs).toEqual([]);
    expect(refs.strongRefs).toEqual([{ ...LIKED, did: 'did:plc:alice', collection: 'app.bsky.feed.post', rkey: LIKED.uri.split('/').pop() }]);
  });

  it('finds blobs nested in arrays, with strong refs beside them, in document order', () => {
    const second = blobRef('second image', 'image/jpeg', 99);
    const post = {
      $type: 'app.bsky.feed.post',
      text: 'two images and a quote',
      embed: {
        $type: 'app.bsky.embed.recordWithMedia',
        media: { $type: 'app.bsky.embed.images', images: [{ alt: '', image: IMAGE }, { alt: '', image: second }] },
        record: { $type: 'app.bsky.embed.record', record: strongRef('did:web:example.com', 'app.bsky.feed.post', 2) },
      },
    };
    const refs = extractRefs(CBOR.encode(post));
    expect(refs.blobs).toEqual([
      { cid: (IMAGE.ref as { $link: string }).$link, mimeType: 'image/png', size: 1234, legacy: false },
      { cid: (second.ref as { $link: string }).$link, mimeType: 'image/jpeg', size: 99, legacy: false },
    ]);
    expect(refs.strongRefs.map((r) => r.did)).toEqual(['did:web:example.com']);
  });

  it('finds legacy blobs ({ cid, mimeType })', () => {
    const refs = extractRefs(CBOR.encode({ $type: 'app.bsky.actor.profile', avatar: { cid: LEGACY_CID, mimeType: 'image/jpeg' } }));
    expect(refs.blobs).toEqual([{ cid: LEGACY_CID, mimeType: 'image/jpeg', size: undefined, legacy: true }]);
    expect(refs.strongRefs).toEqual([]);
  });

  it('leaves out refs that are not what they look like', () => {
    const refs = extractRefs(
      CBOR.encode({
        $type: 'com.example.thing',
        notABlob: { $type: 'blob', ref: 'bafy-not-a-link', mimeType: 'x/y', size: 1 },
        handleUri: { uri: 'at://alice.example.com/app.bsky.feed.post/3kabc', cid: LIKED.cid },
        repoUri: { uri: 'at://did:plc:alice', cid: LIKED.cid },
        badCid: { uri: LIKED.uri, cid: 'nope' },
        legacyBadCid: { cid: 'nope', mimeType: 'image/png' },
      }),
    );
    expect(refs).toEqual({ blobs: [], strongRefs: [] });
  });

  it('finds the refs the test repos put in records', () => {
    expect(extractRefs(CBOR.encode(recordValue('app.bsky.feed.post', 10))).blobs).toHaveLength(1);
    expect(extractRefs(CBOR.encode(recordValue('app.bsky.feed.post', 3))).strongRefs).toHaveLength(2);
    expect(extractRefs(CBOR.encode(recordValue('app.bsky.feed.post', 1)))).toEqual({ blobs: [], strongRefs: [] });
    expect(extractRefs(CBOR.encode(recordValue('app.bsky.graph.follow', 1)))).toEqual({ blobs: [], strongRefs: [] });
  });

  it('survives deep nesting', () => {
    let value: unknown = { blob: IMAGE };
    for (let i = 0; i < 5000; i++) value = [value];
    expect(extractRefs(CBOR.encode({ deep: value })).blobs).toHaveLength(1);
  });

  it('refuses bytes that are not a DAG-CBOR map', () => {
    expect(() => extractRefs(CBOR.encode(['a', 'list', { cid: LEGACY_CID }]))).toThrow(RecordError);
    expect(() => extractRefs(CBOR.encode('just text'))).toThrow(RecordError);
    expect(() => extractRefs(Uint8Array.of(0xa1, 0x63, 0x63, 0x69, 0x64))).toThrow(RecordError);
  });
});
