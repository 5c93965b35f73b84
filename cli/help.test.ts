/**
 * Issue 12 item 11: `--help` after any command prints that command's usage and exits 0,
 * without loading configuration or contacting a server. The "server" here is a TCP listener
 * that counts connections; the configuration is deliberately invalid.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HELP_COMMANDS, helpFor } from './help.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
let connections = 0;
const server = createServer((s) => {
  connections++;
  s.destroy();
});
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  env = { ...process.env, TEMPORAL_ADDRESS: `127.0.0.1:${port}`, DATABASE_URL: `postgres://u:p@127.0.0.1:${port}/x`, REPOWALK_PG_PORT: 'not-a-port' };
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env, timeout: 150_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

// Every command, in the forms people type; the walk and backfill ones with real flags before
// --help (the case that used to start a walk and fail on the connection).
const INVOCATIONS: string[][] = [
  ...HELP_COMMANDS.map((c) => [c, '--help']),
  ...HELP_COMMANDS.map((c) => [c, '-h']),
  ['walk', 'start', '--help'],
  ['walk', 'start', 'validate', '--check', 'refcount', '--wait', '--help'],
  ['walk', 'status', 'walk/x', '--help'],
  ['walk', 'pause', 'walk/x', '-h'],
  ['backfill', 'add', '--help'],
  ['backfill', 'add', 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', '--wait', '--help'],
  ['backfill', 'resync', '--help'],
  ['schedule', 'apply', '--help'],
  ['schedule', 'help'],
  ['stack', 'up', '--help'],
  ['worker', '--job', 'backfill', '--help'],
  ['ping', 'hello', '--help'],
];

describe('--help after a command', () => {
  it(`helpFor gives the command's usage for ${INVOCATIONS.length} invocations`, () => {
    for (const args of INVOCATIONS) expect(helpFor(args), args.join(' ')).toMatch(new RegExp(`^usage: repowalk ${args[0]}\\b`));
    for (const args of [['walk', 'start', 'validate'], ['ping', '--', '--help'], ['nonsense', '--help'], []]) expect(helpFor(args), args.join(' ')).toBeUndefined();
  });

  // Spawning the CLI costs seconds each on a busy machine: a few, the ones that matter most.
  const END_TO_END = [INVOCATIONS.find((a) => a.length > 5 && a[0] === 'walk')!, ['backfill', 'add', '--help'], ['stack', 'up', '--help']];
  it(`the CLI prints it and exits 0 with a bad configuration and no server contacted (${END_TO_END.length} invocations)`, async () => {
    const results = await Promise.all(END_TO_END.map(run));
    END_TO_END.forEach((args, i) => {
      const r = results[i]!;
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stdout, args.join(' ')).toMatch(new RegExp(`^usage: repowalk ${args[0]}\\b`));
      expect(r.stderr, args.join(' ')).toBe('');
    });
    expect(connections).toBe(0);
  }, 180_000);

  it('every command main.ts dispatches has its usage here (main refuses a command this table lacks)', async () => {
    const { readFile } = await import('node:fs/promises');
    const dispatched = [...(await readFile(MAIN, 'utf8')).matchAll(/^\s+case '([a-z-]+)':/gm)].map((m) => m[1]!);
    expect(dispatched.length).toBeGreaterThan(10);
    expect(dispatched.filter((c) => !HELP_COMMANDS.includes(c))).toEqual([]);
  });

  it('an unknown command gets the general usage and exit 2, before the configuration is read', async () => {
    const u = await run(['nonsense', '--help']);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/unknown command "nonsense"/);
  }, 120_000);
});
