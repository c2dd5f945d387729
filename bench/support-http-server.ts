import 'reflect-metadata';
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import express, { Router, type Express } from 'express';
import { DataSource, type Repository } from 'typeorm';
import { Cells } from '../lib';
import { createApp } from '../examples/express/app';
import { DEFAULT_PROJECT } from '../examples/express/context';
import { Server } from '../examples/express/entities/Server';
import { HttpError, errorHandler, notFound } from '../examples/express/errors';
import { uuidParam } from '../examples/express/params';
import { serverView, type CellView } from '../examples/express/views';
import { listen, type Listening, type ServerCounters, type ServerSpec } from './support-http';

// Run as a program, this is the child process of `startChildServer`: it receives a ServerSpec over
// IPC, serves it on a free loopback port, sends `{ port }`, answers `'counters'` with its
// ServerCounters, and closes everything when the parent disconnects.

const log = (line: string) => process.stderr.write(`${line}\n`);

/** The store of `unroutedApp`'s optional bare async context: nothing reads it. */
const bareContext = new AsyncLocalStorage<{ requestId: string }>();

/**
 * `GET /servers/:uuid` with the example's middleware shape (request id header, JSON body parser,
 * uuid check, project visibility, view, error handler) on one plain DataSource: no request context,
 * no mapping lookup, no routing. With `asyncContext`, the rest of each request runs inside a bare
 * `AsyncLocalStorage.run`, as the example's context middleware does, and nothing else.
 */
export function unroutedApp(
  servers: Repository<Server>,
  cell: CellView,
  options: { asyncContext: boolean },
): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use((_req, res, next) => {
    const requestId = `req-${randomUUID()}`;
    res.setHeader('x-request-id', requestId);
    if (options.asyncContext) bareContext.run({ requestId }, next);
    else next();
  });
  app.use(express.json({ limit: '16kb' }));
  const router = Router();
  router.get('/:uuid', async (req, res) => {
    const uuid = uuidParam(req.params['uuid'], 'The server id');
    const server = await servers.findOneBy({ uuid });
    if (server === null || server.projectId !== (req.get('x-project-id') ?? DEFAULT_PROJECT)) {
      throw new HttpError('SERVER_NOT_FOUND', `Server ${uuid} does not exist.`);
    }
    res.json({ server: serverView(server, cell) });
  });
  app.use('/servers', router);
  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}

/** A served app: its listener, its mapping-cache loads and refreshes so far, and how to close its databases. */
interface Served {
  http: Listening;
  mappingLoads(): number;
  mappingRefreshes(): number;
  close(): Promise<void>;
}

async function serve(spec: ServerSpec): Promise<Served> {
  if (spec.kind === 'routed') {
    const cells = await new Cells({
      api: spec.apiUrl,
      entities: [Server],
      poolSize: spec.poolSize,
    }).initialize();
    return {
      http: await listen(createApp(cells, { log })),
      mappingLoads: () => cells.mappings.cacheStats().loads,
      mappingRefreshes: () => cells.mappings.cacheStats().refreshes,
      close: () => cells.destroy(),
    };
  }
  const ds = await new DataSource({
    type: 'postgres',
    url: spec.url,
    entities: [Server],
    poolSize: spec.poolSize,
  }).initialize();
  return {
    http: await listen(
      unroutedApp(ds.getRepository(Server), spec.cell, { asyncContext: spec.asyncContext }),
    ),
    mappingLoads: () => 0,
    mappingRefreshes: () => 0,
    close: () => ds.destroy(),
  };
}

if (require.main === module)
  process.once('message', (spec: ServerSpec) => {
    serve(spec).then(
      (served) => {
        process.once('disconnect', () => {
          void served.http
            .close()
            .then(() => served.close())
            .finally(() => process.exit(0));
        });
        process.on('message', (message) => {
          if (message !== 'counters') return;
          const cpu = process.cpuUsage();
          const counters: ServerCounters = {
            cpuMicros: cpu.user + cpu.system,
            mappingLoads: served.mappingLoads(),
            mappingRefreshes: served.mappingRefreshes(),
          };
          process.send?.(counters);
        });
        process.send?.({ port: served.http.port });
      },
      (error: unknown) => {
        process.send?.({ error: error instanceof Error ? error.message : String(error) });
        process.exitCode = 1;
        process.disconnect();
      },
    );
  });
