/**
 * Test fixtures on the reference PDS (`stack/pds.ts`): accounts (create, log in, deactivate,
 * take down, delete), records (create, put, delete, applyWrites) and blobs.
 *
 *   const alice = await createAccount(pds, 'alice');           // alice.test, a did:plc
 *   await createRecord(alice, 'app.bsky.feed.post', { text: 'hi', createdAt: now() });
 */
import { baseUrl, rkeyOf, xrpcProcedure, type PdsAdmin, type PdsTarget, type RecordValue } from './xrpc.ts';

export interface TestAccount {
  did: string;
  handle: string;
  email: string;
  password: string;
  accessJwt: string;
  refreshJwt: string;
  /** The PDS this account lives on (loopback URL). */
  pdsUrl: string;
}

/** Creates an account. A handle without a dot gets the PDS's `.test` domain. */
export async function createAccount(
  pds: PdsTarget,
  handle: string,
  opts: { password?: string; email?: string } = {},
): Promise<TestAccount> {
  const full = handle.includes('.') ? handle : `${handle}.test`;
  const password = opts.password ?? `pw-${full}`;
  const email = opts.email ?? `${full.replace(/[^a-z0-9]/gi, '-')}@example.com`;
  const out = await xrpcProcedure<{ did: string; handle: string; accessJwt: string; refreshJwt: string }>(
    pds,
    'com.atproto.server.createAccount',
    { handle: full, email, password },
  );
  return { did: out.did, handle: out.handle, email, password, accessJwt: out.accessJwt, refreshJwt: out.refreshJwt, pdsUrl: baseUrl(pds) };
}

/** Logs in again (fresh tokens), e.g. after a PDS restart on the same data directory. */
export async function createSession(pds: PdsTarget, identifier: string, password: string): Promise<TestAccount> {
  const out = await xrpcProcedure<{ did: string; handle: string; email?: string; accessJwt: string; refreshJwt: string }>(
    pds,
    'com.atproto.server.createSession',
    { identifier, password },
  );
  return { did: out.did, handle: out.handle, email: out.email ?? '', password, accessJwt: out.accessJwt, refreshJwt: out.refreshJwt, pdsUrl: baseUrl(pds) };
}

/** com.atproto.server.deactivateAccount: getRepo then answers RepoDeactivated. */
export async function deactivateAccount(account: TestAccount): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.server.deactivateAccount', {}, { token: account.accessJwt });
}

export async function activateAccount(account: TestAccount): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.server.activateAccount', undefined, { token: account.accessJwt });
}

/** Admin takedown (com.atproto.admin.updateSubjectStatus): getRepo then answers RepoTakendown.
 *  `applied: false` reverses it. */
export async function takedownAccount(pds: PdsAdmin, did: string, opts: { applied?: boolean; ref?: string } = {}): Promise<void> {
  const applied = opts.applied ?? true;
  await xrpcProcedure(
    pds,
    'com.atproto.admin.updateSubjectStatus',
    {
      subject: { $type: 'com.atproto.admin.defs#repoRef', did },
      takedown: applied ? { applied, ref: opts.ref ?? `repowalk-test-${Date.now()}` } : { applied },
    },
    { adminPassword: pds.adminPassword },
  );
}

/** Admin delete (com.atproto.admin.deleteAccount): getRepo then answers RepoNotFound; the DID
 *  still resolves in the PLC. */
export async function deleteAccountAdmin(pds: PdsAdmin, did: string): Promise<void> {
  await xrpcProcedure(pds, 'com.atproto.admin.deleteAccount', { did }, { adminPassword: pds.adminPassword });
}

export interface RecordRef {
  uri: string;
  cid: string;
}

export interface WrittenRecord extends RecordRef {
  collection: string;
  rkey: string;
}

function withType(collection: string, record: RecordValue): RecordValue {
  return record.$type ? record : { $type: collection, ...record };
}

export async function createRecord(
  account: TestAccount,
  collection: string,
  record: RecordValue,
  opts: { rkey?: string; validate?: boolean } = {},
): Promise<WrittenRecord> {
  const out = await xrpcProcedure<RecordRef>(
    account.pdsUrl,
    'com.atproto.repo.createRecord',
    { repo: account.did, collection, rkey: opts.rkey, validate: opts.validate, record: withType(collection, record) },
    { token: account.accessJwt },
  );
  return { uri: out.uri, cid: out.cid, collection, rkey: rkeyOf(out.uri) };
}

/** Creates or replaces the record at collection/rkey. */
export async function putRecord(
  account: TestAccount,
  collection: string,
  rkey: string,
  record: RecordValue,
  opts: { validate?: boolean } = {},
): Promise<WrittenRecord> {
  const out = await xrpcProcedure<RecordRef>(
    account.pdsUrl,
    'com.atproto.repo.putRecord',
    { repo: account.did, collection, rkey, validate: opts.validate, record: withType(collection, record) },
    { token: account.accessJwt },
  );
  return { uri: out.uri, cid: out.cid, collection, rkey };
}

export async function deleteRecord(account: TestAccount, collection: string, rkey: string): Promise<void> {
  await xrpcProcedure(account.pdsUrl, 'com.atproto.repo.deleteRecord', { repo: account.did, collection, rkey }, { token: account.accessJwt });
}

export type Write =
  | { action: 'create'; collection: string; rkey?: string; value: RecordValue }
  | { action: 'update'; collection: string; rkey: string; value: RecordValue }
  | { action: 'delete'; collection: string; rkey: string };

/** com.atproto.repo.applyWrites: up to 200 writes in one commit. Returns one entry per write
 *  (uri and cid for creates and updates, uri only for deletes). */
export async function applyWrites(
  account: TestAccount,
  writes: Write[],
  opts: { validate?: boolean } = {},
): Promise<Array<{ uri: string; cid?: string; collection: string; rkey: string }>> {
  const body = {
    repo: account.did,
    validate: opts.validate,
    writes: writes.map((w) =>
      w.action === 'delete'
        ? { $type: 'com.atproto.repo.applyWrites#delete', collection: w.collection, rkey: w.rkey }
        : {
            $type: `com.atproto.repo.applyWrites#${w.action}`,
            collection: w.collection,
            rkey: w.rkey,
            value: withType(w.collection, w.value),
          },
    ),
  };
  const out = await xrpcProcedure<{ results?: Array<{ uri?: string; cid?: string }> }>(account.pdsUrl, 'com.atproto.repo.applyWrites', body, {
    token: account.accessJwt,
  });
  const results = out.results ?? [];
  return writes.map((w, i) => {
    const r = results[i] ?? {};
    const rkey = r.uri ? rkeyOf(r.uri) : (w.rkey ?? '');
    return { uri: r.uri ?? `at://${account.did}/${w.collection}/${rkey}`, cid: r.cid, collection: w.collection, rkey };
  });
}

/** A blob reference as it appears in a record (JSON form). */
export interface BlobRef {
  $type: 'blob';
  ref: { $link: string };
  mimeType: string;
  size: number;
}

/** Uploads a blob; reference the returned BlobRef from a record soon, or the PDS drops it. */
export async function uploadBlob(account: TestAccount, bytes: Uint8Array, mimeType: string): Promise<BlobRef> {
  const out = await xrpcProcedure<{ blob: BlobRef }>(account.pdsUrl, 'com.atproto.repo.uploadBlob', bytes, {
    token: account.accessJwt,
    contentType: mimeType,
  });
  return out.blob;
}
