/**
 * The network side against the real thing: the reference PDS and PLC of test/pds.ts. The
 * first run provisions them (Node 22 and their packages, about 1.5 min); later runs start in
 * seconds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { verifyRepoStream } from '../verify.ts';
import { createAccount, createRecord, deactivateAccount, startPds, type PdsServer } from '../../test/pds.ts';
import { RepoGoneError, outcomeOf } from './errors.ts';
import { IdentityCache } from './identity-cache.ts';
import { resolveDid } from './identity.ts';
import { Politeness } from './politeness.ts';
import { getRepo, getRepoStatus, listAllRepos, openRepo } from './sync.ts';

let pds: PdsServer | undefined;
let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'repowalk-net-pds-'));
  pds = await startPds({ dataDir });
}, 900_000);

afterAll(async () => {
  await pds?.stop();
  await rm(dataDir, { recursive: true, force: true });
}, 60_000);

it('resolves a real did:plc, streams its CAR gzip-encoded from the real PDS, and it verifies', async () => {
  const { plcUrl, publicUrl } = pds!;
  const alice = await createAccount(pds!, 'netalice');
  for (let i = 0; i < 20; i++) await createRecord(alice, 'app.bsky.feed.post', { $type: 'app.bsky.feed.post', text: `post ${i}`, createdAt: new Date().toISOString() });

  // Loopback everywhere: the PLC, and the PDS the DID document names (http://localhost:P).
  const net = { allowPrivate: true, timeoutMs: 10_000, politeness: new Politeness({ concurrency: 2 }) };
  const id = await resolveDid(alice.did, { ...net, plcUrl, cache: new IdentityCache() });
  // The test PDS's handle domain has no DNS record and is not served at https://<handle>/:
  // the claim is kept aside and the handle stored as unverified.
  expect(id).toMatchObject({ did: alice.did, pds: publicUrl, handle: 'handle.invalid', claimedHandle: alice.handle, handleVerified: false });
  expect(id.signingKey).toMatch(/^did:key:z/);

  let bytes = 0;
  const body = await openRepo(id.pds, alice.did, { ...net, maxBytes: 16 << 20, onBytes: (n) => (bytes += n) });
  expect(body.contentEncoding).toBe('gzip');
  const repo = await verifyRepoStream(body, { did: alice.did, signingKey: id.signingKey });
  expect(repo.records.filter((r) => r.collection === 'app.bsky.feed.post')).toHaveLength(20);
  expect(bytes).toBe(repo.carBytes);

  const status = await getRepoStatus(id.pds, alice.did, net);
  expect(status).toMatchObject({ did: alice.did, active: true, rev: repo.rev });
  const listed = [];
  for await (const page of listAllRepos(id.pds, { ...net, limit: 1 })) listed.push(...page.repos);
  expect(listed.map((r) => r.did)).toContain(alice.did);

  await deactivateAccount(alice);
  const err = await getRepo(id.pds, alice.did, { ...net, maxBytes: 16 << 20 })
    .next()
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RepoGoneError);
  expect(outcomeOf(err)).toMatchObject({ kind: 'gone', status: 'deactivated' });
});
