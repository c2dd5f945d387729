import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Express } from 'express';
import { listen, type Listening } from '../../dev/listen';
import { Cells, type CellMapping, type CellState, type CellsOptions } from '../../lib';
import { createApp, type AppOptions } from '../../examples/express/app';
import { DEFAULT_PROJECT } from '../../examples/express/context';
import { Server } from '../../examples/express/entities/Server';
import { CELL_MIGRATIONS } from '../../examples/express/migrations';
import { migrateCell, registerCell } from '../../examples/express/provision';
import { createTestDatabase, rowsIn, type TestDatabase } from './databases';
import { createMysqlTestDatabase } from './mysql';
import { startSecondServer, type SecondServer } from './second-server';

/** A cell of the example app: its mapping and the URL its mapping holds. */
export interface ExampleCell {
  mapping: CellMapping;
  url: string;
}

/** One cell to create, migrate and map. */
export interface ExampleCellSpec {
  /** The cell's name; `cell0` gets the reserved cell0 uuid. */
  name: string;
  /** Its database is `<label>_<database>`. */
  database: string;
  /** Marked disabled once mapped. Default: false. */
  disabled?: boolean;
  /** Set to this state once mapped (see CellState). Default: active. */
  state?: CellState;
  /** Its database is on a second PostgreSQL server (started for the fixture), not the test server. Default: false. */
  onSecondServer?: boolean;
  /** Its database is a MariaDB one on the MySQL test server (CELLS_TEST_MYSQL_URL). Default: false. */
  onMysql?: boolean;
}

/** Options of `createExampleApp`. */
export interface ExampleAppOptions {
  /** How many cells to create, migrate and map as `<label>-<i>` (database `<label>_c<i>`). Default: 2. */
  cellCount?: number;
  /** The cells to create instead of `cellCount` numbered ones, in this order. */
  cellSpecs?: readonly ExampleCellSpec[];
  /** Rewrites each database URL (API and cells) before Cells sees it, e.g. to log in with a chosen password. */
  connectionUrl?: (url: string) => string;
  /** Pool of the API database. Default: 2. */
  apiPoolSize?: number;
  /** Options for `new Cells()` over the fixture's (pool 2, connect timeout 3000 ms, migrateApi). */
  cells?: Partial<CellsOptions>;
  /** Options for `createApp` over the fixture's (list timeout 3000 ms, health timeout 1000 ms, log into `logged`). */
  app?: AppOptions;
  /** Also serve the app on a free loopback port, as `http`. Default: false (hand `app` to supertest). */
  listen?: boolean;
}

/**
 * The example app over its own API database and migrated cells: the fixture of the specs and
 * benchmarks that drive the app or its lookup path. `destroy()` closes everything it opened.
 */
export interface ExampleApp {
  app: Express;
  /** The initialized `Cells` the app runs on. */
  lib: Cells;
  api: TestDatabase;
  /** URL of the API database as Cells uses it (it may carry a chosen password). */
  apiUrl: string;
  /** The cells, in the order asked for. */
  cells: ExampleCell[];
  /** Lines the app logged for internal errors. */
  logged: string[];
  /** The app served on a loopback port, with `listen`. */
  http: Listening | undefined;
  /** The server of the `onSecondServer` cells, when there are any. */
  second: SecondServer | undefined;
  /** Another initialized `Cells` (library defaults but `options`) over the API database, as a second process would have. */
  open(options?: Partial<CellsOptions>): Promise<Cells>;
  /**
   * Writes `count` servers of the example's default project, round-robin over the cells, and their
   * instance mappings, with plain SQL (no cache is told, as none has looked them up yet).
   * @returns their uuids, in creation order.
   */
  seed(count: number): Promise<string[]>;
  destroy(): Promise<void>;
}

/** Creates the API database, the cells' databases (migrated and mapped), a `Cells` and the example app over it. */
export async function createExampleApp(
  label: string,
  options: ExampleAppOptions = {},
): Promise<ExampleApp> {
  const rewrite = options.connectionUrl ?? ((url: string) => url);
  const specs: readonly ExampleCellSpec[] =
    options.cellSpecs ??
    Array.from({ length: options.cellCount ?? 2 }, (_, i) => ({
      name: `${label}-${i}`,
      database: `c${i}`,
    }));
  const second = specs.some((s) => s.onSecondServer) ? await startSecondServer() : undefined;
  const dbs: TestDatabase[] = [];
  const opened: Cells[] = [];
  let http: Listening | undefined;
  const destroy = async () => {
    await http?.close();
    await Promise.all(opened.map((cells) => cells.destroy()));
    await Promise.all(dbs.map((db) => db.drop()));
    await second?.remove();
  };
  try {
    const api = await createTestDatabase(`${label}_api`);
    dbs.push(api);
    const apiUrl = rewrite(api.url);
    const open = async (cellsOptions: Partial<CellsOptions> = {}) => {
      const cells = new Cells({ api: apiUrl, entities: [Server], ...cellsOptions });
      opened.push(cells);
      return cells.initialize();
    };
    const lib = await open({
      api: { url: apiUrl, poolSize: options.apiPoolSize ?? 2 },
      migrations: CELL_MIGRATIONS,
      migrateApi: true,
      poolSize: 2,
      connectTimeoutMs: 3000,
      ...options.cells,
    });
    const cells: ExampleCell[] = [];
    for (const spec of specs) {
      const database = `${label}_${spec.database}`;
      let url: string;
      if (spec.onSecondServer) {
        url = await second!.createDatabase(database);
      } else if (spec.onMysql) {
        const db = await createMysqlTestDatabase(database, 'mariadb');
        dbs.push(db);
        url = db.url;
      } else {
        const db = await createTestDatabase(database);
        dbs.push(db);
        url = db.url;
      }
      await migrateCell(url);
      url = rewrite(url);
      let mapping = await registerCell(lib, { name: spec.name, url });
      if (spec.disabled) mapping = await lib.mappings.updateCell(mapping.uuid, { disabled: true });
      if (spec.state !== undefined) mapping = await lib.mappings.setCellState(mapping.uuid, spec.state);
      cells.push({ mapping, url });
    }
    const logged: string[] = [];
    const app = createApp(lib, {
      listTimeoutMs: 3000,
      healthTimeoutMs: 1000,
      log: (line) => logged.push(line),
      ...options.app,
    });
    if (options.listen) http = await listen(app);
    const seed = async (count: number) => {
      const uuids = Array.from({ length: count }, () => randomUUID());
      await Promise.all(
        cells.map(async (cell, c) => {
          const mine = uuids.filter((_, i) => i % cells.length === c);
          await rowsIn(
            cell.url,
            `INSERT INTO servers (uuid, name, project_id) SELECT u, 'bench-' || left(u::text, 8), $2 FROM unnest($1::uuid[]) AS u`,
            [mine, DEFAULT_PROJECT],
          );
          await rowsIn(cell.url, 'ANALYZE servers');
          await rowsIn(
            api.url,
            `INSERT INTO instance_mappings (instance_uuid, cell_id, project_id) SELECT u, $2, $3 FROM unnest($1::uuid[]) AS u`,
            [mine, cell.mapping.id, DEFAULT_PROJECT],
          );
        }),
      );
      await rowsIn(api.url, 'ANALYZE instance_mappings');
      return uuids;
    };
    return { app, lib, api, apiUrl, cells, logged, http, second, open, seed, destroy };
  } catch (error) {
    await destroy();
    throw error;
  }
}
