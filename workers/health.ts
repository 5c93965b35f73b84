/**
 * The worker's operator endpoint (`REPOWALK_METRICS_PORT`, on 127.0.0.1 unless told otherwise):
 *
 *   GET /healthz   200 while every job's worker runs, 503 while starting or shutting down;
 *                  JSON: { status, pid, jobs: [{ job, taskQueue, state }] }
 *   GET /metrics   Prometheus text: repowalk's metrics, then the Temporal SDK's
 *
 * It stays up until the worker has drained, so that a shutdown is visible from outside.
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Metrics } from './metrics.ts';

export type WorkerStatus = 'starting' | 'running' | 'stopping';

export interface HealthReport {
  status: WorkerStatus;
  pid: number;
  /** Each job's Temporal worker and its SDK state (RUNNING, DRAINING, …). */
  jobs: Array<{ job: string; taskQueue: string; state: string }>;
}

export interface HealthServer {
  /** Where it listens, `http://host:port`. */
  url: string;
  close(): Promise<void>;
}

export async function startHealthServer(opts: { port: number; host: string; report: () => HealthReport; metrics: Metrics }): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/healthz') {
      const report = opts.report();
      const healthy = report.status === 'running' && report.jobs.every((j) => j.state === 'RUNNING');
      res.writeHead(healthy ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(report) + '\n');
      return;
    }
    if (path === '/metrics') {
      opts.metrics.text().then(
        (text) => res.writeHead(200, { 'content-type': opts.metrics.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz or /metrics\n');
  });
  // Scrapers keep connections alive; they must not hold the process open after the worker stopped.
  server.keepAliveTimeout = 5_000;
  server.listen(opts.port, opts.host);
  await once(server, 'listening');
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address.includes(':') ? `[${address}]` : address}:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
