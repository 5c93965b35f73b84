import { describe, expect, it } from 'vitest';
import { collectionFilter, FilterOptions } from './filters.ts';

describe('collection filters', () => {
  it('keeps everything in full mode', () => {
    const f = collectionFilter(FilterOptions.parse({ include: ['app.bsky.feed.post'] }));
    expect(f.keeps('com.example.thing')).toBe(true);
    expect(f.keepsRepo([])).toBe(true);
  });

  it('applies include and exclude patterns in filter mode, exclude winning', () => {
    const f = collectionFilter(FilterOptions.parse({ mode: 'filter', include: ['app.bsky.*'], exclude: ['app.bsky.feed.like'] }));
    expect(f.keeps('app.bsky.feed.post')).toBe(true);
    expect(f.keeps('app.bsky.feed.like')).toBe(false);
    expect(f.keeps('app.bskyx.feed.post')).toBe(false);
    expect(f.keeps('com.whtwnd.blog.entry')).toBe(false);
  });

  it('drops a repo with no record in a signal collection, whatever the include list says', () => {
    const f = collectionFilter(FilterOptions.parse({ mode: 'filter', include: ['app.bsky.feed.post'], signal: ['com.whtwnd.*'] }));
    expect(f.keepsRepo(['app.bsky.feed.post', 'app.bsky.actor.profile'])).toBe(false);
    expect(f.keepsRepo(['app.bsky.feed.post', 'com.whtwnd.blog.entry'])).toBe(true);
    expect(f.keeps('com.whtwnd.blog.entry')).toBe(false);
  });

  it('refuses malformed patterns', () => {
    expect(() => FilterOptions.parse({ mode: 'filter', include: ['app.*.post'] })).toThrow(/NSID/);
  });
});
