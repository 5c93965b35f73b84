import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, describeOptions, loadConfig, redactCredentials, redactedConfig } from './load.ts';
import { OPTIONS } from './options.ts';

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('gives every option its documented default', () => {
    const c = loadConfig({ env: {}, cwd: '/srv/x' });
    expect(c.stateDir).toBe('/srv/x/.repowalk');
    expect(c.blobstore.dir).toBe('/srv/x/.repowalk/blobs');
    expect(c.temporal).toMatchObject({ address: undefined, namespace: 'default', taskQueue: 'repowalk', port: 7233 });
    expect(c.s3.buckets).toEqual(['repowalk-a', 'repowalk-b']);
    expect(c.blobstore.kind).toBe('local');
  });

  it('names the option, the value and what was expected for a bad value', () => {
    const problems = problemsOf(() => loadConfig({ env: { REPOWALK_PG_PORT: '70000', REPOWALK_BLOBSTORE: 'tape' }, cwd: '/' }));
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^REPOWALK_PG_PORT \(database\.port\) = "70000": .*65535/);
    expect(problems[1]).toMatch(/^REPOWALK_BLOBSTORE \(blobstore\.kind\) = "tape": .*local.*s3.*multiplex/);
  });

  it('never prints a secret value, even when it is wrong', () => {
    const problems = problemsOf(() => loadConfig({ env: { DATABASE_URL: 'hunter2-not-a-url' }, cwd: '/' }));
    expect(problems[0]).toContain('DATABASE_URL');
    expect(problems.join()).not.toContain('hunter2');
    const c = loadConfig({ env: { DATABASE_URL: 'postgres://u:hunter2@db/x', REPOWALK_S3_SECRET_ACCESS_KEY: 'hunter3' }, cwd: '/' });
    expect(JSON.stringify(redactedConfig(c))).not.toMatch(/hunter[23]/);
  });

  // Issue 12 item 7: credentials inside any URL option, not only the options marked secret.
  const WITH_CREDENTIALS: Array<[string, string]> = [
    ['REPOWALK_S3_ENDPOINT', 'https://AKIAEXAMPLE:s3cr3t-one@s3.example.com'],
    ['REPOWALK_PLC_URL', 'https://plcuser:s3cr3t-two@plc.example.com/'],
    ['REPOWALK_PLC_URL', 'http://only-user-s3cr3t-three@plc.example.com'],
    ['REPOWALK_S3_ENDPOINT', 'https://u:p%40ss-s3cr3t-four@s3.example.com:9000/path'],
    ['REPOWALK_S3_ENDPOINT', 'https://u:pa@ss-s3cr3t-five@s3.example.com'],
    ['DATABASE_URL', 'postgres://app:s3cr3t-six@db.example.com:5432/repowalk'],
  ];

  it(`redacts user:pass@ in ${WITH_CREDENTIALS.length} URL option values, in config and in errors`, () => {
    for (const [env, value] of WITH_CREDENTIALS) {
      const c = loadConfig({ env: { [env]: value }, cwd: '/' });
      const printed = JSON.stringify(redactedConfig(c));
      expect(printed, env).not.toMatch(/s3cr3t/);
      if (env !== 'DATABASE_URL') expect(printed, env).toContain('<redacted>@');
    }
    // A bad value of a URL option is quoted in the error: without its credentials.
    const bad = [
      ['REPOWALK_PLC_URL', 'http://user:s3cr3t-seven@'],
      ['REPOWALK_S3_ENDPOINT', 'not a url but http://u:s3cr3t-eight@host is inside'],
    ];
    for (const [env, value] of bad) {
      const problems = problemsOf(() => loadConfig({ env: { [env!]: value! }, cwd: '/' }));
      expect(problems[0]).toContain(env!);
      expect(problems.join(), env).not.toMatch(/s3cr3t/);
    }
  });

  it('redactCredentials leaves URLs without credentials, and other text, alone', () => {
    for (const plain of ['https://plc.directory', 'http://127.0.0.1:7070/bucket?x=a@b', 'mailto:a@b.c', 'user@example.com', 'did:web:example.com']) {
      expect(redactCredentials(plain)).toBe(plain);
    }
    expect(redactCredentials('connect to postgres://a:b@h/d failed; retry https://c:d@e/')).toBe('connect to postgres://<redacted>@h/d failed; retry https://<redacted>@e/');
  });

  it('reads a config file, lets the environment win, and refuses unknown keys with the file named', () => {
    const dir = mkdtempSync(join(tmpdir(), 'repowalk-config-'));
    const file = join(dir, 'repowalk.config.json');
    writeFileSync(file, JSON.stringify({ temporal: { namespace: 'from-file', taskQueue: 'q-file' }, s3: { buckets: ['b-one', 'b-two'] } }));
    const c = loadConfig({ env: { TEMPORAL_NAMESPACE: 'from-env' }, cwd: dir });
    expect(c.temporal.namespace).toBe('from-env');
    expect(c.temporal.taskQueue).toBe('q-file');
    expect(c.s3.buckets).toEqual(['b-one', 'b-two']);

    writeFileSync(file, JSON.stringify({ temporal: { namespce: 'typo' }, database: { port: 'five' } }));
    const problems = problemsOf(() => loadConfig({ env: {}, cwd: dir }));
    expect(problems).toContainEqual(`${file}: unknown option "temporal.namespce"`);
    expect(problems.some((p) => p.startsWith(`database.port in ${file} (env REPOWALK_PG_PORT) = "five"`))).toBe(true);

    writeFileSync(file, '{ not json');
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(new RegExp(`config file ${file}`));
  });

  it('documents every option', () => {
    const doc = describeOptions();
    for (const o of OPTIONS) expect(doc).toContain(o.env);
  });
});
