/**
 * Where the corpus walk puts a node's bytes:
 *
 *   <NodeType>/<repo path, one directory per segment>/.repowalk,/<aa>/<bb>/<cc>/<key>
 *
 * so that `find Record/app.bsky.feed.post -path '*\/.repowalk,/*'` selects by repo path and
 * everything after `.repowalk,` is the blob structure. Nodes without a repo path go straight
 * to `<NodeType>/.repowalk,/…`. `aa/bb/cc` are the first three bytes of the key's hash, in hex.
 *
 * Each path segment and the key are percent-encoded (UTF-8, `%XX`) except `A-Z a-z 0-9 - _ ~ :`
 * and `.` after the first character. So no encoded segment is empty, `.`, `..`, hidden, holds a
 * `/`, or contains `,` — the separator `.repowalk,` cannot be forged by a repo path, and nothing
 * escapes the output directory. An empty segment becomes `,`; a segment longer than 200 bytes
 * once encoded is cut at 200 and ends `,<16 hex of its SHA-256>`, within every file system's
 * name limit and still unique.
 */
import { createHash } from 'node:crypto';

export const SEPARATOR = '.repowalk,';
const MAX_SEGMENT = 200;
const KEEP = /[A-Za-z0-9\-_~:]/;

export function encodeSegment(segment: string): string {
  if (segment === '') return ',';
  let out = '';
  const bytes = Buffer.from(segment, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    const ch = String.fromCharCode(b);
    out += b < 0x80 && (KEEP.test(ch) || (ch === '.' && i > 0)) ? ch : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out.length > MAX_SEGMENT) {
    out = `${out.slice(0, MAX_SEGMENT)},${createHash('sha256').update(segment).digest('hex').slice(0, 16)}`;
  }
  return out;
}

/** Inverse of `encodeSegment` for segments that were not cut. */
export function decodeSegment(encoded: string): string {
  if (encoded === ',') return '';
  return decodeURIComponent(encoded);
}

/**
 * The corpus path (relative, `/`-separated) of a node.
 * @param fanout at least 3 bytes of the key's hash
 */
export function corpusPath(nodeType: string, repoPath: string | undefined, key: string, fanout: Uint8Array): string {
  const parts = [nodeType];
  if (repoPath !== undefined) for (const seg of repoPath.split('/')) parts.push(encodeSegment(seg));
  const hex = Buffer.from(fanout.subarray(0, 3)).toString('hex');
  parts.push(SEPARATOR, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4, 6), encodeSegment(key));
  return parts.join('/');
}
