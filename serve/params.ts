/**
 * The zod schemas XRPC parameters are checked with: atproto's syntax rules (DID, handle, NSID,
 * record key, TID, CID) and the limits the PDS lexicons set.
 */
import { z } from 'zod';
import { isCid, isDid, isHandle, isNsid, isRecordKey, isTid } from '@atcute/lexicons/syntax';
import { invalidRequest } from './errors.ts';

export const did = z.string().max(2048).refine((v) => isDid(v), 'must be a valid DID');
/** A `repo` parameter: a DID or a handle. */
export const atIdentifier = z.string().max(2048).refine((v) => isDid(v) || isHandle(v), 'must be a valid DID or handle');
export const nsid = z.string().max(317).refine((v) => isNsid(v), 'must be a valid NSID');
export const recordKey = z.string().max(512).refine((v) => isRecordKey(v), 'must be a valid record key');
export const tid = z.string().refine((v) => isTid(v), 'must be a valid TID');
export const cid = z.string().max(128).refine((v) => isCid(v), 'must be a valid CID');
export const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

/** An integer limit as the lexicons define one: out of range is an error, not clamped. */
export function limit(min: number, max: number, fallback: number) {
  return z.coerce
    .number({ error: 'must be an integer' })
    .int('must be an integer')
    .min(min, `can not be less than ${min}`)
    .max(max, `can not be greater than ${max}`)
    .default(fallback);
}

/**
 * Parses `params` (a query string, repeated keys refused) with `schema`; the error names the
 * parameter and what is wrong with it.
 */
export function parseParams<S extends z.ZodType>(schema: S, params: URLSearchParams): z.infer<S> {
  const obj: Record<string, string> = {};
  for (const [k, v] of params) {
    if (k in obj) throw invalidRequest(`Error: parameter ${k} given more than once`);
    obj[k] = v;
  }
  const r = schema.safeParse(obj);
  if (!r.success) {
    const i = r.error.issues[0]!;
    const name = i.path.join('.') || 'params';
    const message = i.code === 'invalid_type' && obj[name] === undefined ? `Params must have the property "${name}"` : `${name} ${i.message}`;
    throw invalidRequest(`Error: ${message}`);
  }
  return r.data;
}
