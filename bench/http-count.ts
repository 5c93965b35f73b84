/**
 * A download client for the serving bench, in its own process so that the server it measures
 * owns its thread, as it does for a user: the parent sends a URL (IPC), this GETs it with
 * node:http, counts the body's bytes and nothing else, and answers with the count, the status
 * and its own wall time.
 *
 *   fork('bench/http-count.ts') → send(url) → { bytes, status, ms } per URL
 */
import { get } from 'node:http';

process.on('message', (url: string) => {
  const t = performance.now();
  get(url, (res) => {
    let bytes = 0;
    res.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    res.on('end', () => process.send!({ bytes, status: res.statusCode, ms: performance.now() - t }));
    res.on('error', (err) => process.send!({ error: String(err) }));
  }).on('error', (err) => process.send!({ error: String(err) }));
});
process.on('disconnect', () => process.exit(0));
