/**
 * The one DID syntax check: what the CLI accepts, what workflow input accepts, what the
 * resolver resolves and what a PDS's listing may name are the same set of strings, so a DID
 * that passes one check can never fail another with an untyped error further on.
 *
 * No imports: workflow code (input validation) uses it too.
 */

/** Longest DID accepted (the atproto DID syntax allows up to 2 KB). */
export const MAX_DID_LENGTH = 2048;

const PLC = /^did:plc:[a-z2-7]{24}$/;
// An atproto did:web is a host name, no path; a port only for localhost (percent-encoded colon).
const WEB = /^did:web:(?:[a-zA-Z0-9-]{1,63}(?:\.[a-zA-Z0-9-]{1,63})*\.[a-zA-Z]{2,63}|localhost(?:%3[aA](\d{1,5}))?)$/;

/**
 * Why `did` is not a DID repowalk can mirror, or undefined when it is one: `did:plc:` and 24
 * base32 characters, or an atproto `did:web` (a host name of at most 253 characters, no path;
 * a port from 1 to 65535 only for `localhost`).
 */
export function didProblem(did: unknown): string | undefined {
  if (typeof did !== 'string') return 'not a string';
  if (did.length > MAX_DID_LENGTH) return `longer than ${MAX_DID_LENGTH} characters`;
  if (did.startsWith('did:plc:')) return PLC.test(did) ? undefined : 'a did:plc is "did:plc:" and 24 characters of a-z and 2-7';
  if (did.startsWith('did:web:')) {
    const m = WEB.exec(did);
    if (m === null) return 'not a did:web atproto supports (a host name, no path; a port only for localhost)';
    if (did.length - 'did:web:'.length > 253) return 'its host name is longer than 253 characters';
    if (m[1] !== undefined) {
      const port = Number(m[1]);
      if (port < 1 || port > 65535) return `port ${m[1]} is not from 1 to 65535`;
    }
    return undefined;
  }
  return 'not a did:plc or did:web DID';
}

/** Whether `did` passes `didProblem`. */
export function isMirrorableDid(did: unknown): did is string {
  return didProblem(did) === undefined;
}

/** `did` for a message: quoted, and cut short when a hostile source made it long. */
export function showDid(did: unknown): string {
  const text = typeof did === 'string' ? did : String(did);
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
}
