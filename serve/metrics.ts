/**
 * The serving metrics, in a registry of their own: the server's `/metrics` serves it (or the
 * registry the wiring hands in), and the serve job's wiring adds these metrics to the worker's
 * process registry, so that the worker's `/metrics` reports them with the rest.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export const serveRegistry = new Registry();

export const requests = new Counter({
  name: 'repowalk_serve_requests_total',
  help: 'Requests served, by route (XRPC method, stream or admin path) and HTTP status.',
  labelNames: ['route', 'status'] as const,
  registers: [serveRegistry],
});
export const bytesServed = new Counter({
  name: 'repowalk_serve_bytes_total',
  help: 'Response bytes written, by route (stream: event message bytes).',
  labelNames: ['route'] as const,
  registers: [serveRegistry],
});
export const requestSeconds = new Histogram({
  name: 'repowalk_serve_request_seconds',
  help: 'Time to answer a request (to the last byte), by route.',
  labelNames: ['route'] as const,
  buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60],
  registers: [serveRegistry],
});
export const streamClients = new Gauge({
  name: 'repowalk_serve_stream_clients',
  help: 'Event stream clients connected.',
  registers: [serveRegistry],
});
export const streamEvents = new Counter({
  name: 'repowalk_serve_stream_events_total',
  help: 'Events sent to stream clients.',
  registers: [serveRegistry],
});
export const streamDropped = new Counter({
  name: 'repowalk_serve_stream_dropped_total',
  help: 'Stream clients the server dropped, by reason (slow, unacked, bad-message).',
  labelNames: ['reason'] as const,
  registers: [serveRegistry],
});
export const streamHeld = new Gauge({
  name: 'repowalk_serve_stream_held_events',
  help: 'Event ids taken that the stream cannot send yet, as transactions that may still commit them are open (storage/event-horizon.ts).',
  registers: [serveRegistry],
});
export const streamLag = new Gauge({
  name: 'repowalk_serve_stream_lag_events',
  help: 'Largest lag of a connected stream client: events in the log after the last one it was sent.',
  registers: [serveRegistry],
});
