/**
 * Decoding DAG-CBOR that came from the network, for the blocks whose exact bytes matter (the
 * commit): nesting is bounded, and the bytes must be the one canonical encoding of what they
 * decode to. `@atcute/cbor` already refuses unsorted or duplicate keys and non-minimal
 * lengths; it accepts a float where an integer belongs (`3.0`, `-0.0`), and its encoder turns
 * a `{"$link": …}` or `{"$bytes": …}` map into a link or bytes (throwing a SyntaxError when the
 * string is not one) and recurses once per level. Re-encoding and comparing catches all three,
 * and checking the depth first keeps the re-encoding off the stack limit.
 */
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';

/** Why bytes are not canonical DAG-CBOR within the depth bound; callers wrap it in their own named error. */
export class DagCborError extends Error {
  override name = 'DagCborError';
  readonly reason: 'malformed' | 'too-deep' | 'non-canonical';
  constructor(reason: DagCborError['reason'], message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * The value of `bytes`, which must be canonical DAG-CBOR nested at most `maxDepth` levels
 * (a scalar is depth 0, a map of scalars depth 1).
 *
 * @throws DagCborError and nothing else, whatever the bytes
 */
export function decodeCanonical(bytes: Uint8Array, maxDepth: number): unknown {
  let value: unknown;
  try {
    value = CBOR.decode(bytes);
  } catch (cause) {
    throw new DagCborError('malformed', `not valid DAG-CBOR: ${messageOf(cause)}`, { cause });
  }
  const depth = depthOf(value, maxDepth);
  if (depth > maxDepth) throw new DagCborError('too-deep', `nested deeper than ${maxDepth} levels`);
  let again: Uint8Array;
  try {
    again = CBOR.encode(value);
  } catch (cause) {
    // A map shaped like a link or bytes whose string is not one: the decoder let it through as
    // a plain map, the encoder cannot write it back.
    throw new DagCborError('non-canonical', `holds a value DAG-CBOR cannot re-encode: ${messageOf(cause)}`, { cause });
  }
  if (!sameBytes(again, bytes)) {
    throw new DagCborError('non-canonical', 'not canonical DAG-CBOR (re-encoding gives other bytes: a float for an integer, -0, a {"$link"} or {"$bytes"} map)');
  }
  return value;
}

/**
 * How deeply `value` nests maps and arrays, counted without recursion and given up as soon as
 * it passes `limit` (returns `limit + 1` then).
 */
export function depthOf(value: unknown, limit: number): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null || v instanceof CidLinkWrapper || v instanceof CBOR.BytesWrapper) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (max > limit) return limit + 1;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth]);
    }
  }
  return max;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
