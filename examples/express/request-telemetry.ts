import type { IncomingHttpHeaders } from 'node:http';
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Meter,
  type Tracer,
} from '@opentelemetry/api';
import type { Request, RequestHandler, Response } from 'express';

/** The methods the HTTP semantic conventions know; any other is reported as `_OTHER`. */
const KNOWN_METHODS = new Set([
  'CONNECT',
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
  'TRACE',
]);
/** Bucket boundaries (s) the semantic conventions advise for `http.server.request.duration`. */
const DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];
/** Where `res.locals` keeps the matched route and the error code of a failed request. */
const ROUTE_KEY = 'httpRoute';
const ERROR_CODE_KEY = 'errorCode';

/**
 * Express middleware (mount it first) that gives each request a SERVER span and records
 * `http.server.request.duration` (s) and `http.server.active_requests`, after the OpenTelemetry HTTP
 * semantic conventions: span `GET /servers/:uuid`, attributes `http.request.method`, `url.path`,
 * `url.scheme`, `http.route`, `http.response.status_code`, and on a 5xx `error.type` (the app's error
 * code) and status ERROR. The span continues a W3C `traceparent` the client sent, and is the active
 * span for the rest of the request, so the library's spans become its children.
 *
 * No query string, header or body goes into the span or the metrics.
 */
export function requestTelemetry(tracer: Tracer, meter: Meter): RequestHandler {
  const duration = meter.createHistogram('http.server.request.duration', {
    unit: 's',
    description: 'Duration of HTTP server requests.',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  const active = meter.createUpDownCounter('http.server.active_requests', {
    unit: '{request}',
    description: 'Number of HTTP server requests in flight.',
  });
  return (req, res, next) => {
    const started = performance.now();
    const method = KNOWN_METHODS.has(req.method) ? req.method : '_OTHER';
    const attributes: Attributes = {
      'http.request.method': method,
      'url.scheme': 'http',
      'url.path': pathOf(req.originalUrl),
    };
    if (method === '_OTHER') attributes['http.request.method_original'] = req.method;
    const parent = propagation.extract(ROOT_CONTEXT, req.headers, headerGetter);
    const span = tracer.startSpan(
      method === '_OTHER' ? 'HTTP' : method,
      { kind: SpanKind.SERVER, attributes },
      parent,
    );
    active.add(1, { 'http.request.method': method, 'url.scheme': 'http' });
    recordRoute(req, res);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      active.add(-1, { 'http.request.method': method, 'url.scheme': 'http' });
      const route = routeOf(res);
      const status = res.statusCode;
      const done: Attributes = {
        'http.request.method': method,
        'url.scheme': 'http',
        'http.response.status_code': status,
      };
      if (route !== undefined) {
        done['http.route'] = route;
        span.updateName(`${method === '_OTHER' ? 'HTTP' : method} ${route}`);
      }
      if (status >= 500) {
        done['error.type'] = errorCodeOf(res) ?? String(status);
        span.setStatus({ code: SpanStatusCode.ERROR });
      } else if (!res.writableFinished) {
        // The client went away before the response was complete.
        done['error.type'] = 'aborted';
      }
      span.setAttributes(done);
      span.end();
      duration.record((performance.now() - started) / 1000, done);
    };
    res.once('finish', end);
    res.once('close', end);
    context.with(trace.setSpan(parent, span), next);
  };
}

/**
 * Records `code` as the error code of the request's response, for `error.type` of a 5xx; the app's
 * error handler calls it.
 */
export function recordErrorCode(res: Response, code: string): void {
  res.locals[ERROR_CODE_KEY] = code;
}

/**
 * Keeps the route template (`/servers/:uuid`) that matched the request in `res.locals`. Express sets
 * `req.route` when a route matches, while `req.baseUrl` is its router's mount path; by the time the
 * response ends, a route that failed has handed its error to the app-level error handler, which runs
 * with `baseUrl` reset, so reading them at the end would give `/:uuid` for a 404 or 503 of that route.
 */
function recordRoute(req: Request, res: Response): void {
  let route: unknown = req.route;
  Object.defineProperty(req, 'route', {
    configurable: true,
    enumerable: true,
    get: () => route,
    set(value: unknown) {
      route = value;
      const path = (value as { path?: unknown } | undefined)?.path;
      // A router's own root (`router.get('/')` under `/servers`) is the route `/servers`.
      if (typeof path === 'string')
        res.locals[ROUTE_KEY] = path === '/' && req.baseUrl ? req.baseUrl : `${req.baseUrl}${path}`;
    },
  });
}

function routeOf(res: Response): string | undefined {
  const route = res.locals[ROUTE_KEY] as unknown;
  return typeof route === 'string' ? route : undefined;
}

function errorCodeOf(res: Response): string | undefined {
  const code = res.locals[ERROR_CODE_KEY] as unknown;
  return typeof code === 'string' ? code : undefined;
}

/** The path of a request target, without its query string. */
function pathOf(target: string): string {
  const query = target.indexOf('?');
  return query === -1 ? target : target.slice(0, query);
}

const headerGetter = {
  keys: (headers: IncomingHttpHeaders) => Object.keys(headers),
  get(headers: IncomingHttpHeaders, key: string): string | string[] | undefined {
    return headers[key];
  },
};
