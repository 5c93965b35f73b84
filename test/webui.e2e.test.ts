/**
 * The dev server's Web UI, as an operator uses it: headless Chromium (Debian's package, installed
 * by test/ensure-chromium.sh when missing) opens the workflow list filtered by repowalk's search
 * attributes, finds a running repowalk workflow there, sees its id and status in the page, opens
 * it, and saves screenshots under test-artifacts/.
 *
 * Chromium is driven over the DevTools protocol with Node's own WebSocket (no npm package), and
 * every wait is for content in the page, never a fixed sleep: the UI is a single-page app that
 * fills itself in after load.
 *
 * Both kinds of workflow an operator looks for are checked, each the same way: a running walk
 * (tailing between passes) and a `backfillRepo` waiting out its backoff.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { freePort } from '../config/free-port.ts';
import { loadConfig } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { runWorker } from '../workers/worker.ts';
import { selectJobs } from '../workers/jobs.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { backfillRepo, backfillRepoStateQuery } from '../workflows/backfill-repo.ts';
import { walk, walkProgressQuery } from '../workflows/walk.ts';
import { freshDatabase, testStack } from './stack.ts';
import { waitFor } from './helpers.ts';

const ROOT = join(import.meta.dirname, '..');
const ARTIFACTS = join(ROOT, 'test-artifacts');
const prefix = `webui-${process.pid}`;

interface Target {
  /** The job whose worker runs it. */
  job: string;
  /** Starts the workflow and waits until it is in the state the UI should show; returns its id. */
  start(client: Client, taskQueue: string): Promise<string>;
  /** The list query an operator types (or links to) to find it. */
  query(workflowId: string): string;
  /** Its RepowalkState while the test looks at it. */
  state: string;
}

const TARGETS: Record<'walk' | 'backfill', Target> = {
  walk: {
    job: 'walk',
    async start(client, taskQueue) {
      const workflowId = `walk/webui-${Date.now()}`;
      // One pass over an empty mirror ends at once; the tail interval keeps the walk running.
      const handle = await client.workflow.start(walk, { taskQueue, workflowId, args: [{ type: 'validate', tailIntervalSeconds: 3600 }] });
      await waitFor('the walk to tail', async () => (await handle.query(walkProgressQuery)).state === 'tailing');
      return workflowId;
    },
    query: () => "RepowalkKind = 'walk' AND WalkType = 'validate' AND RepowalkState = 'tailing'",
    state: 'tailing',
  },
  backfill: {
    job: 'backfill',
    async start(client, taskQueue) {
      // Its PLC lookup fails (nothing listens there), so the repo waits in backoff: a durable timer.
      const did = `did:plc:${Array.from({ length: 24 }, () => 'abcdefghijklmnopqrstuvwxyz234567'[Math.floor(Math.random() * 32)]).join('')}`;
      const workflowId = `backfill/${did}`;
      const handle = await client.workflow.start(backfillRepo, { taskQueue, workflowId, args: [{ did }] });
      await waitFor('the repo to back off', async () => (await handle.query(backfillRepoStateQuery)).state === 'backoff');
      return workflowId;
    },
    query: (workflowId) => `RepowalkKind = 'backfill' AND RepowalkState = 'backoff' AND RepoDid = '${workflowId.slice('backfill/'.length)}'`,
    state: 'backoff',
  },
};

const KINDS = ['walk', 'backfill'] as const;

// ---------------------------------------------------------------------------------------------
// A small DevTools-protocol client
// ---------------------------------------------------------------------------------------------

interface Browser {
  /** A new tab (its own CDP session) at about:blank. */
  newPage(width: number, height: number): Promise<Page>;
  close(): Promise<void>;
}

interface Page {
  navigate(url: string): Promise<void>;
  /** Evaluates an expression in the page and returns its (JSON) value. */
  evaluate<T>(expression: string): Promise<T>;
  screenshot(path: string): Promise<void>;
}

async function launchChromium(bin: string): Promise<Browser> {
  const profile = await mkdtemp(join(tmpdir(), 'repowalk-chromium-'));
  const child: ChildProcess = spawn(
    bin,
    [
      // The machine's recipe: no sandbox as root, no GPU, and no calls home (the network is closed).
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profile}`, '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', 'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const wsUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chromium did not open its DevTools port:\n${stderr}`)), 30_000);
    child.stderr!.on('data', (d) => {
      stderr += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`chromium exited ${code}:\n${stderr}`)));
  });

  const ws = new WebSocket(wsUrl);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve(), { once: true });
    ws.addEventListener('error', () => reject(new Error(`cannot connect to ${wsUrl}`)), { once: true });
  });
  let nextId = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; method: string }>();
  ws.addEventListener('message', (ev) => {
    const msg = JSON.parse(String(ev.data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`));
    else p?.resolve(msg.result);
  });
  const send = <T>(method: string, params: object = {}, sessionId?: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = ++nextId;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });

  return {
    async newPage(width, height) {
      const { targetId } = await send<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
      await send('Page.enable', {}, sessionId);
      await send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false }, sessionId);
      return {
        async navigate(url) {
          const r = await send<{ errorText?: string }>('Page.navigate', { url }, sessionId);
          if (r.errorText) throw new Error(`navigating to ${url}: ${r.errorText}`);
        },
        async evaluate<T>(expression: string) {
          const r = await send<{ result: { value?: T }; exceptionDetails?: { text: string } }>('Runtime.evaluate', { expression, returnByValue: true }, sessionId);
          if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.text}`);
          return r.result.value as T;
        },
        async screenshot(path) {
          const { data } = await send<{ data: string }>('Page.captureScreenshot', { format: 'png' }, sessionId);
          await writeFile(path, Buffer.from(data, 'base64'));
        },
      };
    },
    async close() {
      ws.close();
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
      // Chromium's helper processes can still write into the profile for a moment after the
      // browser exits (ENOTEMPTY on the first try): removal is tried again, ten times at most.
      await rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    },
  };
}

// ---------------------------------------------------------------------------------------------



function ensureChromium(): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('bash', [join(ROOT, 'test/ensure-chromium.sh')], { timeout: 15 * 60_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`test/ensure-chromium.sh failed: ${err.message}\n${stderr}`)) : resolve(stdout.trim().split('\n').at(-1)!),
    ),
  );
}

/** The text of the list row that holds `workflowId`, or undefined while there is none. */
const rowText = (workflowId: string) => `(() => {
  const id = ${JSON.stringify(workflowId)};
  const rows = [...document.querySelectorAll('tr, [role="row"]')].filter((r) => r.innerText.includes(id));
  return rows.length ? rows[rows.length - 1].innerText : undefined;
})()`;

let browser: Browser;
let client: Client;
const workflowIds: Partial<Record<(typeof KINDS)[number], string>> = {};
let stopWorker: AbortController;
let workerDone: Promise<void>;

beforeAll(async () => {
  const stack = testStack();
  const [bin, databaseUrl, closedPort, stateDir] = await Promise.all([ensureChromium(), freshDatabase('webui'), freePort(), mkdtemp(join(tmpdir(), 'repowalk-webui-'))]);
  const config = loadConfig({
    env: {
      REPOWALK_STATE_DIR: stateDir,
      REPOWALK_LOG_LEVEL: 'warn',
      TEMPORAL_ADDRESS: stack.temporal.address,
      TEMPORAL_NAMESPACE: stack.temporal.namespace,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: join(stateDir, 'blobs'),
      REPOWALK_TASK_QUEUE: prefix,
      // Nothing listens here: DID resolution fails as a transport error, and the repo backs off.
      REPOWALK_PLC_URL: `http://127.0.0.1:${closedPort}`,
    },
  });
  stopWorker = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const jobs = selectJobs(KINDS.map((k) => TARGETS[k].job), [], []);
  expect(jobs.map((j) => j.name).sort()).toEqual(['backfill', 'walk']);
  workerDone = runWorker({ config, endpoints: resolveEndpoints(config), jobs, signal: stopWorker.signal, handleSignals: false, onReady: () => ready() });
  await Promise.race([isReady, workerDone.then(() => Promise.reject(new Error('worker stopped before it was ready')))]);
  client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }), namespace: stack.temporal.namespace });
  for (const kind of KINDS) {
    const target = TARGETS[kind];
    const workflowId = (workflowIds[kind] = await target.start(client, taskQueueFor(config, target.job as never)));
    // The list in the UI reads the same visibility store: wait until the query finds it.
    await waitFor(`the ${kind} workflow in visibility`, async () => {
      for await (const wf of client.workflow.list({ query: target.query(workflowId) })) if (wf.workflowId === workflowId) return true;
      return undefined;
    });
  }
  browser = await launchChromium(bin);
  await mkdir(ARTIFACTS, { recursive: true });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  for (const id of Object.values(workflowIds)) await client?.workflow.getHandle(id).terminate('web UI test done').catch(() => {});
  await client?.connection.close();
  stopWorker?.abort();
  await workerDone;
}, 60_000);

describe.each(KINDS)('the Web UI, %s', (kind) => {
  it('finds the running workflow by its search attributes and shows its id and status', async () => {
    const TARGET = TARGETS[kind];
    const workflowId = workflowIds[kind]!;
    const { uiUrl, namespace } = testStack().temporal;
    expect(uiUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const page = await browser.newPage(1400, 900);
    const listUrl = `${uiUrl}/namespaces/${namespace}/workflows?query=${encodeURIComponent(TARGET.query(workflowId))}`;
    await page.navigate(listUrl);
    const row = await waitFor(`a row for ${workflowId} in ${listUrl}`, () => page.evaluate<string | undefined>(rowText(workflowId)));
    expect(row).toContain(workflowId);
    expect(row).toMatch(/\bRunning\b/);
    // The filter the page applied is the search-attribute query (the UI shows it as chips).
    const text = await page.evaluate<string>('document.body.innerText');
    expect(text).toMatch(new RegExp(`RepowalkKind\\s*=\\s*"?${kind}"?`));
    await page.screenshot(join(ARTIFACTS, `webui-${kind}-workflow-list.png`));

    // Its own page: the same id and status, opened the way an operator does, by the link.
    const href = await page.evaluate<string | undefined>(`(() => {
      const id = ${JSON.stringify(workflowId)};
      const a = [...document.querySelectorAll('a')].find((a) => a.innerText.trim() === id);
      return a ? a.href : undefined;
    })()`);
    expect(href).toBeDefined();
    await page.navigate(href!);
    const detail = await waitFor('the workflow page', async () => {
      const t = await page.evaluate<string>('document.body.innerText');
      // Both kinds wait on a durable timer here (the backoff, the tail interval): the history shows it.
      return t.includes(workflowId) && /\bRunning\b/.test(t) && /Timer Started/.test(t) && t;
    });
    expect(detail).toContain(workflowId);
    await page.screenshot(join(ARTIFACTS, `webui-${kind}-workflow.png`));
    // The workflow's current details, set by the workflow itself, say in words where it is.
    const openedMetadata = await page.evaluate<boolean>(`(() => {
      const tab = [...document.querySelectorAll('a, button, [role="tab"]')].find((e) => e.innerText.trim() === 'User Metadata');
      if (!tab) return false;
      tab.click();
      return true;
    })()`);
    expect(openedMetadata).toBe(true);
    await waitFor('the current details', async () => {
      // The UI renders them as markdown inside an iframe.
      const t = await page.evaluate<string>(`[...document.querySelectorAll('iframe')].map((f) => {
        try { return (f.contentDocument && f.contentDocument.body.innerText) || f.srcdoc || ''; } catch { return f.srcdoc || ''; }
      }).join('\\n')`);
      return (kind === 'walk' ? /validate walk: (tailing|running)/ : /backfill did:\S+: backoff/).test(t);
    });
    await page.screenshot(join(ARTIFACTS, `webui-${kind}-current-details.png`));

    // Its repowalk state, in the Search Attributes tab.
    const clicked = await page.evaluate<boolean>(`(() => {
      const tab = [...document.querySelectorAll('a, button, [role="tab"]')].find((e) => e.innerText.trim() === 'Search Attributes');
      if (!tab) return false;
      tab.click();
      return true;
    })()`);
    expect(clicked).toBe(true);
    const attrs = await waitFor('the search attributes', async () => {
      const t = await page.evaluate<string>('document.body.innerText');
      return new RegExp(`"RepowalkState":\\s*"${TARGET.state}"`).test(t) && t;
    });
    expect(attrs).toMatch(/RepowalkKind/);
    await page.screenshot(join(ARTIFACTS, `webui-${kind}-search-attributes.png`));
  });
});
