import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Cells, type CellMapping } from '../../lib';
import { createApp } from '../../examples/express/app';
import { Server } from '../../examples/express/entities/Server';
import { CELL_MIGRATIONS } from '../../examples/express/migrations';
import { migrateCell, registerCell } from '../../examples/express/provision';
import { createTestDatabase, type TestDatabase } from '../support/databases';
import { startSecondServer, type SecondServer } from '../support/second-server';

/** A cell of the example world: its mapping and the URL of its database. */
export interface ExampleCell {
  mapping: CellMapping;
  url: string;
}

/** The example app over cell0, two cells and a disabled cell on the test server, plus one cell on a second server. */
export interface ExampleWorld {
  cells: Cells;
  http: HttpServer;
  api: TestDatabase;
  cell0: ExampleCell;
  near: [ExampleCell, ExampleCell];
  disabled: ExampleCell;
  /** The cell whose database is on `second`. */
  far: ExampleCell;
  second: SecondServer;
  /** Lines the app logged for internal errors. */
  logged: string[];
  destroy(): Promise<void>;
}

/** Options of `createExampleWorld`. */
export interface ExampleWorldOptions {
  listTimeoutMs?: number;
}

/** Creates and migrates every database, maps the cells, and starts the app on a free port. */
export async function createExampleWorld(label: string, options: ExampleWorldOptions = {}): Promise<ExampleWorld> {
  const second = await startSecondServer();
  const dbs: TestDatabase[] = [];
  let cells: Cells | undefined;
  try {
    const api = await createTestDatabase(`${label}_api`);
    dbs.push(api);
    const local = async (name: string): Promise<string> => {
      const db = await createTestDatabase(`${label}_${name}`);
      dbs.push(db);
      await migrateCell(db.url);
      return db.url;
    };
    const urls = { cell0: await local('cell0'), a: await local('a'), b: await local('b'), off: await local('off') };
    const farUrl = await second.createDatabase('cells_example_far');
    await migrateCell(farUrl);
    cells = await new Cells({
      api: api.url,
      entities: [Server],
      migrations: CELL_MIGRATIONS,
      migrateApi: true,
      poolSize: 3,
      connectTimeoutMs: 2000,
    }).initialize();
    const cell = async (name: string, url: string): Promise<ExampleCell> => ({ mapping: await registerCell(cells!, { name, url }), url });
    const cell0 = await cell('cell0', urls.cell0);
    const near: [ExampleCell, ExampleCell] = [await cell(`${label}-a`, urls.a), await cell(`${label}-b`, urls.b)];
    const disabled = await cell(`${label}-off`, urls.off);
    disabled.mapping = await cells.mappings.updateCell(disabled.mapping.uuid, { disabled: true });
    const far = await cell(`${label}-far`, farUrl);
    const logged: string[] = [];
    const app = createApp(cells, { listTimeoutMs: options.listTimeoutMs ?? 3000, healthTimeoutMs: 1000, log: (l) => logged.push(l) });
    const http = createServer(app);
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const ready = cells;
    return {
      cells: ready,
      http,
      api,
      cell0,
      near,
      disabled,
      far,
      second,
      logged,
      async destroy() {
        http.closeAllConnections();
        await new Promise((resolve) => http.close(resolve));
        await ready.destroy();
        await Promise.all(dbs.map((db) => db.drop()));
        await second.remove();
      },
    };
  } catch (error) {
    await cells?.destroy();
    await Promise.all(dbs.map((db) => db.drop()));
    await second.remove();
    throw error;
  }
}

/** The port the world's app listens on. */
export function portOf(world: ExampleWorld): number {
  return (world.http.address() as AddressInfo).port;
}
