/**
 * Repo paths with a chosen MST layer, for hand-made trees. Layers come from the reference
 * implementation's hash helper, not from the code under test.
 */
import * as TID from '@atcute/tid';
import { referenceLayer } from './craft-mst.ts';

/**
 * `count` distinct paths `collection/<tid>` of MST layer `layer`, ascending. Deterministic: the
 * same arguments give the same keys. A key is of layer L with probability about 3/4^(L+1), so
 * layers above 3 take a while.
 */
export async function keysOfLayer(layer: number, count: number, collection = 'app.bsky.feed.post', start = 0): Promise<string[]> {
  const keys: string[] = [];
  for (let i = start; keys.length < count; i++) {
    const key = `${collection}/${TID.create(1_700_000_000_000_000 + i * 1000, 0)}`;
    if ((await referenceLayer(key)) === layer) keys.push(key);
  }
  return keys;
}
