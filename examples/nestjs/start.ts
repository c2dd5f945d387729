import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { Cells, maskSecrets, redactUrl } from '../../lib';
import { ensureDatabase } from '../../dev/databases';
import { Server } from '../express/entities/Server';
import { migrateCell, registerCell } from '../express/provision';
import { AppModule } from './app.module';

/**
 * `npm run start:nestjs`: the NestJS example on the PostgreSQL server of `DATABASE_URL`, with an API
 * database and cell0, cell1, cell2 (`cells_nestjs_example_*`, created and migrated when missing).
 * `PORT` (default 3000) picks the HTTP port. Ctrl-C closes the app, and with it every DataSource.
 */

const HOST = '127.0.0.1';
const DATABASES = { api: 'cells_nestjs_example_api', cells: ['cell0', 'cell1', 'cell2'] } as const;

async function main(): Promise<void> {
  const serverUrl = process.env['DATABASE_URL'];
  if (!serverUrl) throw new Error('Set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres');
  const port = Number(process.env['PORT'] ?? '3000');
  const apiUrl = await ensureDatabase(serverUrl, DATABASES.api);
  const cellUrls = new Map<string, string>();
  for (const name of DATABASES.cells) {
    const url = await ensureDatabase(serverUrl, `cells_nestjs_example_${name}`);
    await migrateCell(url);
    cellUrls.set(name, url);
  }
  const app = await NestFactory.create(
    AppModule.register({ cells: { api: apiUrl, entities: [Server], migrateApi: true, poolSize: 4, connectTimeoutMs: 3000 } }),
  );
  app.enableShutdownHooks();
  const cells = app.get(Cells);
  for (const [name, url] of cellUrls) await registerCell(cells, { name, url });
  await app.listen(port, HOST);
  const base = `http://${HOST}:${port}`;
  console.log(
    [
      ``,
      `typeorm-cells NestJS example listening on ${base} (PostgreSQL: ${redactUrl(serverUrl)})`,
      `  curl -s -X POST ${base}/servers -H 'x-project-id: demo' -H 'content-type: application/json' -d '{"name":"web-1"}'`,
      `  curl -s '${base}/servers?limit=3' -H 'x-project-id: demo'`,
      `  curl -s ${base}/servers/<uuid> -H 'x-project-id: demo'`,
      `Press Ctrl-C to stop.`,
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  console.error(`\nThe NestJS example could not start: ${maskSecrets(error instanceof Error ? error.message : String(error))}`);
  process.exit(1);
});
