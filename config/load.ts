/**
 * Reads the configuration from the environment and an optional JSON file, validates every
 * option against its row in `options.ts`, and fails at once with every bad value named.
 * The environment wins over the file; the file wins over defaults.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { OPTIONS, type Config, type OptionSpec } from './options.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.problems = problems;
  }
}

export interface LoadOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Path of a JSON config file. Default: $REPOWALK_CONFIG, else ./repowalk.config.json if present. */
  file?: string;
}

function getPath(obj: unknown, dotted: string): unknown {
  let cur = obj;
  for (const part of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let cur = obj;
  for (const part of parts.slice(0, -1)) {
    cur = (cur[part] ??= {}) as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

function knownKeys(): Set<string> {
  return new Set(OPTIONS.map((o) => o.key));
}

/** Dotted keys present in a file object that no option claims (a typo should not pass silently). */
function unknownFileKeys(obj: unknown, prefix = ''): string[] {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return [];
  const known = knownKeys();
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (known.has(key)) continue;
    const nested = [...known].some((kk) => kk.startsWith(key + '.'));
    if (nested && v !== null && typeof v === 'object' && !Array.isArray(v)) out.push(...unknownFileKeys(v, key));
    else out.push(key);
  }
  return out;
}

function show(value: unknown, spec: OptionSpec): string {
  if (spec.secret) return '<redacted>';
  return redactCredentials(JSON.stringify(value) ?? String(value));
}

// scheme://userinfo@ — the userinfo ends at the last '@' before the path, so a password holding
// '@' is covered too; anything up to the next '/', whitespace or quote is the authority.
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/)[^\s/"'?#]*@/gi;

/**
 * `text` with the user name and password of every URL in it replaced, for printing: any option
 * (an S3 endpoint, the PLC directory, a database URL) can carry `user:pass@`, and so can an
 * error message that quotes one.
 */
export function redactCredentials(text: string): string {
  return text.replace(URL_CREDENTIALS, '$1<redacted>@');
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const problems: string[] = [];

  const filePath = opts.file ?? env.REPOWALK_CONFIG ?? (existsSync(resolve(cwd, 'repowalk.config.json')) ? 'repowalk.config.json' : undefined);
  let file: unknown = {};
  let fileLabel = '';
  if (filePath) {
    const abs = resolve(cwd, filePath);
    fileLabel = abs;
    try {
      file = JSON.parse(readFileSync(abs, 'utf8'));
    } catch (err) {
      throw new ConfigError([`config file ${abs}: ${(err as Error).message}`]);
    }
    for (const key of unknownFileKeys(file)) problems.push(`${abs}: unknown option "${key}"`);
  }

  const out: Record<string, unknown> = {};
  const ctx = { cwd, get: (key: string) => getPath(out, key) };
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    const fromEnv = env[spec.env];
    const fromFile = getPath(file, spec.key);
    let raw: unknown;
    let source: string;
    if (fromEnv !== undefined && fromEnv !== '') {
      raw = fromEnv;
      source = `${spec.env} (${spec.key})`;
    } else if (fromFile !== undefined) {
      raw = fromFile;
      source = `${spec.key} in ${fileLabel} (env ${spec.env})`;
    } else {
      setPath(out, spec.key, spec.default(ctx));
      continue;
    }
    const parsed = spec.schema.safeParse(raw);
    if (parsed.success) {
      setPath(out, spec.key, parsed.data);
    } else {
      const why = parsed.error.issues.map((i) => i.message).join('; ');
      problems.push(`${source} = ${show(raw, spec)}: ${why}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  // `out` holds one value per row of the table at the row's key, each its schema's output or the
  // row's default: the shape `Config` is derived from (options.ts), built by dotted path.
  return out as unknown as Config;
}

/** The option table as text, for `repowalk config`. */
export function describeOptions(): string {
  return (OPTIONS as readonly OptionSpec[])
    .map((o) => `${o.env}  (file: ${o.key}; default: ${o.defaultText})\n    ${o.doc}`)
    .join('\n');
}

/** The configuration with secrets replaced, and credentials inside any URL-bearing value, for printing. */
export function redactedConfig(config: Config): Record<string, unknown> {
  const copy = structuredClone(config) as unknown as Record<string, unknown>;
  for (const o of OPTIONS as readonly OptionSpec[]) {
    if (o.secret && getPath(copy, o.key) !== undefined) setPath(copy, o.key, '<redacted>');
  }
  return redactStrings(copy) as Record<string, unknown>;
}

function redactStrings(value: unknown): unknown {
  if (typeof value === 'string') return redactCredentials(value);
  if (Array.isArray(value)) return value.map(redactStrings);
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactStrings(v)]));
  return value;
}
