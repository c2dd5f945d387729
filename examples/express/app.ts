import express, { type Express } from 'express';
import { bindContext, type Cells } from '../../lib';
import { requestContext } from './context';
import { bodyError, errorHandler, notFound } from './errors';
import { cellRoutes } from './routes/cells';
import { requestTelemetry } from './request-telemetry';
import { serverRoutes } from './routes/servers';
import type { AppTelemetry } from './telemetry';

/** Options of `createApp`. */
export interface AppOptions {
  /** How long `GET /servers` waits for each cell before listing it in `unreachable_cells`. Default: 3000. */
  listTimeoutMs?: number;
  /** How long `GET /healthz` waits for each cell before calling it unreachable. Default: 1000. */
  healthTimeoutMs?: number;
  /** Where internal errors are logged (secrets masked). Default: console.error. */
  log?: (line: string) => void;
  /**
   * The OpenTelemetry SDK (`startTelemetry()`): each request gets a SERVER span and HTTP metrics, and
   * `GET /metrics` serves every metric, the library's included, in Prometheus text format.
   * Default: none (no span, no `/metrics`).
   */
  telemetry?: AppTelemetry;
}

/**
 * The example Express 5 app over an initialized `Cells` whose cell entities include `Server`.
 * It does not listen: call `app.listen(port)` or hand it to supertest.
 */
export function createApp(cells: Cells, options: AppOptions = {}): Express {
  const log = options.log ?? ((line: string) => console.error(line));
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  const parseJson = express.json({ limit: '16kb' });
  const telemetry = options.telemetry;
  if (telemetry) {
    app.use(requestTelemetry(telemetry.tracer, telemetry.meter));
    app.get('/metrics', (req, res) => telemetry.prometheus.getMetricsRequestHandler(req, res));
  }
  app.use(requestContext());
  // The body parser calls back from socket events, which run outside the request's async context:
  // bind its callback so the handlers after it still see the context.
  app.use((req, res, next) =>
    parseJson(req, res, bindContext((error?: unknown) => next(error === undefined ? undefined : bodyError(error)))),
  );
  app.use('/servers', serverRoutes(cells, { listTimeoutMs: options.listTimeoutMs ?? 3000, log }));
  app.use(cellRoutes(cells, { healthTimeoutMs: options.healthTimeoutMs ?? 1000 }));
  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}
