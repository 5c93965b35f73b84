/**
 * MSTs that break one invariant each (and one that breaks two in a node), as `craft-mst.ts`
 * trees: the fixtures that import and the validate walk must judge alike. Each names the code
 * import's `MstError` carries for it.
 */
import type { MstErrorCode } from '../errors.ts';
import type { NodeSpec } from './craft-mst.ts';
import { keysOfLayer } from './keys.ts';

export interface MstFault {
  name: string;
  tree: NodeSpec;
  code: MstErrorCode;
}

/** The faults, with keys of the layers each needs (computed by the reference implementation). */
export async function mstFaults(): Promise<MstFault[]> {
  const [layer0, layer1, layer2] = await Promise.all([keysOfLayer(0, 6), keysOfLayer(1, 3), keysOfLayer(2, 1)]);
  const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : 1);
  return [
    { name: 'keys out of order', tree: { entries: [{ key: layer0[1]! }, { key: layer0[0]! }] }, code: 'mst-unsorted' },
    { name: 'a duplicate key', tree: { entries: [{ key: layer0[0]! }, { key: layer0[0]! }] }, code: 'mst-unsorted' },
    {
      name: 'keys out of order across a subtree',
      tree: { left: { entries: [{ key: 'app.bsky.zzzz.post/3kzzzzzzzzzzz' }] }, entries: [{ key: layer1[0]! }] },
      code: 'mst-unsorted',
    },
    { name: 'a key on a higher layer than its node', tree: { entries: [{ key: layer0[0]! }, { key: layer0[1]! }, { key: layer1[0]! }].sort(byKey) }, code: 'mst-layer' },
    { name: 'a subtree that skips a layer', tree: { left: { entries: [{ key: layer0[0]! }] }, entries: [{ key: layer2[0]! }] }, code: 'mst-layer' },
    { name: 'a node of layer 0 with a subtree', tree: { entries: [{ key: layer0[0]!, right: { entries: [{ key: layer0[1]! }] } }] }, code: 'mst-layer' },
    { name: 'an invalid path (no collection NSID)', tree: { entries: [{ key: 'notansid/3kabcdefghijk' }] }, code: 'mst-path' },
    { name: 'an invalid path (two slashes)', tree: { entries: [{ key: 'app.bsky.feed.post/a/b' }] }, code: 'mst-path' },
    { name: 'a prefix shorter than the shared prefix', tree: { entries: [{ key: layer0[0]! }, { key: layer0[1]!, prefix: 3 }] }, code: 'mst-non-canonical' },
    { name: 'an empty node below the root', tree: { entries: [{ key: layer1[0]!, right: { entries: [] } }] }, code: 'mst-non-canonical' },
    { name: 'a root with no entries over a subtree', tree: { left: { entries: [{ key: layer0[0]! }] }, entries: [] }, code: 'mst-non-canonical' },
    {
      name: 'two faults in one node (out of order, then an invalid path)',
      tree: { entries: [{ key: layer0[2]! }, { key: layer0[1]! }, { key: 'app.bsky.feed.post/a/b' }] },
      code: 'mst-unsorted',
    },
  ];
}
