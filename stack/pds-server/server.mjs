// The reference atproto PDS (@atproto/pds) and a PLC directory (@did-plc/server, in memory),
// both on 127.0.0.1, for repowalk's tests and demo. Runs on Node 22 (better-sqlite3 aborts on
// Node 24) from the directory stack/pds-server/ensure.sh installs; start it with
//   stack/pds-server/ensure.sh --run --data-dir DIR [--pds-port N] [--plc-port N] [--watch-stdin]
//
// When both servers answer, prints ONE line on stdout:
//   {"pds":"http://127.0.0.1:P","plc":"http://127.0.0.1:Q","adminPassword":"…","publicUrl":"http://localhost:P","dataDir":"…"}
// Everything else (logs, errors) goes to stderr. SIGTERM / SIGINT (or, with --watch-stdin,
// stdin closing because the parent died) shut both servers down and exit 0.
//
// State lives under the data directory: the PDS's SQLite files and actor stores, blobs on disk
// (blobs/), the secrets (secrets.json), the ports last used (ports.json) and every PLC operation
// (plc-ops.jsonl), replayed into the in-memory PLC on the next start, so a restart on the same
// directory serves the same accounts, DIDs and endpoints (when the old ports are still free).
//
// Environment: PDS_ADMIN_PASSWORD (otherwise a random one, kept in secrets.json); any other
// PDS_* variable set by the caller wins over the defaults below, except the ones this script
// must own (port, hostname, data and blob locations, PLC URL). LOG_ENABLED=true turns on the
// servers' pino logs, written to stderr.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const HOST = '127.0.0.1';

function fail(msg) {
  process.stderr.write(`pds-server: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const out = { dataDir: undefined, pdsPort: undefined, plcPort: undefined, watchStdin: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      return v;
    };
    const port = () => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`${a}: not a port number`);
      return n;
    };
    if (a === '--data-dir') out.dataDir = val();
    else if (a === '--pds-port') out.pdsPort = port();
    else if (a === '--plc-port') out.plcPort = port();
    else if (a === '--watch-stdin') out.watchStdin = true;
    else fail(`unknown argument ${a}`);
  }
  if (!out.dataDir) fail('--data-dir DIR is required');
  return out;
}

async function portIsFree(port) {
  const srv = net.createServer();
  try {
    srv.listen(port, HOST);
    await once(srv, 'listening');
    return true;
  } catch {
    return false;
  } finally {
    srv.close();
  }
}

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, HOST);
  await once(srv, 'listening');
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// Express's app.listen(port) binds every interface; these servers must stay on loopback.
function bindLoopback(app) {
  const listen = app.listen.bind(app);
  app.listen = (port, ...rest) => listen(port, HOST, ...rest.filter((r) => typeof r === 'function'));
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }
}

function writeJson(file, value, mode) {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode });
  fs.renameSync(tmp, file);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const dataDir = path.resolve(args.dataDir);
  fs.mkdirSync(path.join(dataDir, 'blobs', 'tmp'), { recursive: true });

  // Loggers are created when the packages load: point them at stderr first.
  if (/^(true|t|1)$/i.test(process.env.LOG_ENABLED ?? '') && !process.env.LOG_DESTINATION) {
    process.env.LOG_DESTINATION = '/dev/stderr';
  }

  const secretsFile = path.join(dataDir, 'secrets.json');
  const saved = readJson(secretsFile) ?? {};
  const secrets = {
    jwtSecret: saved.jwtSecret ?? randomBytes(32).toString('hex'),
    plcRotationKeyHex: saved.plcRotationKeyHex ?? randomBytes(32).toString('hex'),
    adminPassword: process.env.PDS_ADMIN_PASSWORD || saved.adminPassword || randomBytes(12).toString('hex'),
  };
  writeJson(secretsFile, secrets, 0o600);

  const portsFile = path.join(dataDir, 'ports.json');
  const lastPorts = readJson(portsFile) ?? {};
  const pickPort = async (wanted, last) => {
    if (wanted !== undefined && wanted !== 0) return wanted;
    if (wanted === undefined && last && (await portIsFree(last))) return last;
    return freePort();
  };
  const plcPort = await pickPort(args.plcPort, lastPorts.plc);
  const pdsPort = await pickPort(args.pdsPort, lastPorts.pds);
  if (lastPorts.pds && lastPorts.pds !== pdsPort && fs.existsSync(path.join(dataDir, 'account.sqlite'))) {
    process.stderr.write(
      `pds-server: port ${lastPorts.pds} is taken; existing DID documents still name http://localhost:${lastPorts.pds}\n`,
    );
  }

  const { PlcServer, Database: PlcDatabase } = (await import('@did-plc/server')).default;
  const pds = await import('@atproto/pds');

  // PLC: in memory, with every accepted operation appended to plc-ops.jsonl and replayed here.
  const plcDb = PlcDatabase.mock();
  const opsFile = path.join(dataDir, 'plc-ops.jsonl');
  if (fs.existsSync(opsFile)) {
    let n = 0;
    for (const line of fs.readFileSync(opsFile, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      const { did, op } = JSON.parse(line);
      await plcDb.validateAndAddOp(did, op);
      n++;
    }
    process.stderr.write(`pds-server: replayed ${n} PLC operations\n`);
  }
  const addOp = plcDb.validateAndAddOp.bind(plcDb);
  plcDb.validateAndAddOp = async (did, op) => {
    await addOp(did, op);
    fs.appendFileSync(opsFile, JSON.stringify({ did, op }) + '\n');
  };
  const plc = PlcServer.create({ db: plcDb, port: plcPort });
  bindLoopback(plc.app);
  await plc.start();
  const plcUrl = `http://${HOST}:${plcPort}`;

  const defaults = {
    PDS_DEV_MODE: 'true',
    PDS_INVITE_REQUIRED: 'false',
    PDS_RATE_LIMITS_ENABLED: 'false',
    PDS_ACCEPTING_REPO_IMPORTS: 'true',
    PDS_DID_CACHE_STALE_TTL: String(60 * 60 * 1000),
    PDS_DID_CACHE_MAX_TTL: String(24 * 60 * 60 * 1000),
  };
  for (const [k, v] of Object.entries(defaults)) process.env[k] ??= v;
  Object.assign(process.env, {
    PDS_PORT: String(pdsPort),
    PDS_HOSTNAME: 'localhost',
    PDS_DATA_DIRECTORY: dataDir,
    PDS_BLOBSTORE_DISK_LOCATION: path.join(dataDir, 'blobs'),
    PDS_BLOBSTORE_DISK_TMP_LOCATION: path.join(dataDir, 'blobs', 'tmp'),
    // The PDS's DID resolver refuses IP-literal hosts (safeFetch allowIpHost: false), so it
    // reaches the PLC by name; the PLC listens on 127.0.0.1 only.
    PDS_DID_PLC_URL: `http://localhost:${plcPort}`,
    PDS_JWT_SECRET: secrets.jwtSecret,
    PDS_ADMIN_PASSWORD: secrets.adminPassword,
    PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX: secrets.plcRotationKeyHex,
    PDS_CRAWLERS: '',
  });
  delete process.env.PDS_PLC_ROTATION_KEY_KMS_KEY_ID;
  delete process.env.PDS_BLOBSTORE_S3_BUCKET;
  const env = pds.readEnv();
  const server = await pds.PDS.create(pds.envToCfg(env), pds.envToSecrets(env));
  bindLoopback(server.app);
  await server.start();
  writeJson(portsFile, { pds: pdsPort, plc: plcPort });

  let stopping = false;
  const stop = async (why) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`pds-server: stopping (${why})\n`);
    const timer = setTimeout(() => {
      process.stderr.write('pds-server: shutdown took over 10 s, exiting\n');
      process.exit(1);
    }, 10_000);
    timer.unref();
    try {
      await server.destroy();
    } catch (err) {
      process.stderr.write(`pds-server: PDS shutdown: ${err?.stack ?? err}\n`);
    }
    try {
      await plc.destroy();
    } catch (err) {
      process.stderr.write(`pds-server: PLC shutdown: ${err?.stack ?? err}\n`);
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  if (args.watchStdin) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => void stop('stdin closed'));
    process.stdin.on('error', () => void stop('stdin error'));
  }

  process.stdout.write(
    JSON.stringify({
      pds: `http://${HOST}:${pdsPort}`,
      plc: plcUrl,
      adminPassword: secrets.adminPassword,
      publicUrl: server.ctx.cfg.service.publicUrl,
      dataDir,
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`pds-server: ${err?.stack ?? err}\n`);
  process.exit(1);
});
