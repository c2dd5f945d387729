import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { DataSource, type MigrationInterface } from 'typeorm';
import { Cells, CellMapping, type CellsOptions } from '../../lib';
import { createTestDatabase, rowsIn, type TestDatabase } from './databases';
import { CreateWidgets1764072100000, Widget } from './widget';

/** A cell of a test world: its database and its mapping in the API database. */
export interface TestCell {
  db: TestDatabase;
  mapping: CellMapping;
}

/** An API database with cells mapped in it, and a `Cells` instance routing over them. */
export interface CellWorld {
  api: TestDatabase;
  /** The default main database, with `withMain`. */
  main?: TestDatabase;
  cells: TestCell[];
  lib: Cells;
  /** Destroys `lib` and drops every database of the world. */
  destroy(): Promise<void>;
}

/** Options of `createCellWorld`. */
export interface CellWorldOptions {
  /** How many cells to create and map. Default: 3. */
  cellCount?: number;
  /** Extra options for `new Cells()`. */
  cells?: Partial<CellsOptions>;
  /** Rewrites each cell's connection URL before it is stored (e.g. to add a sentinel password). */
  connectionUrl?: (url: string, index: number) => string;
  /** Extra TypeORM options for the API DataSource (logging, logger...). */
  apiOptions?: Record<string, unknown>;
  /** Also create a default main database with the widgets table. Default: false. */
  withMain?: boolean;
  /**
   * Migrations applied to each cell (and main) database; pass the matching entities in
   * `cells.entities`. Default: the widgets table only.
   */
  cellMigrations?: CellMigration[];
}

/** A cell-database migration class, as TypeORM's `migrations` option takes it. */
export type CellMigration = new () => MigrationInterface;

/** Applies the cell migrations (default: the widgets table) to the database at `url`. */
export async function migrateCellDatabase(
  url: string,
  migrations: CellMigration[] = [CreateWidgets1764072100000],
): Promise<void> {
  const ds = new DataSource({ type: 'postgres', url, migrations, entities: [] });
  await ds.initialize();
  try {
    await ds.runMigrations();
  } finally {
    await ds.destroy();
  }
}

/**
 * Creates an API database (migrated), `cellCount` cell databases (migrated) mapped in it, and an
 * initialized `Cells` over them.
 */
export async function createCellWorld(label: string, options: CellWorldOptions = {}): Promise<CellWorld> {
  const api = await createTestDatabase(`${label}_api`);
  const cells: TestCell[] = [];
  const extra: TestDatabase[] = [];
  let lib: Cells | undefined;
  let main: TestDatabase | undefined;
  try {
    main = options.withMain ? await createTestDatabase(`${label}_main`) : undefined;
    if (main) {
      extra.push(main);
      await migrateCellDatabase(main.url, options.cellMigrations);
    }
    lib = new Cells({
      // Small pools: the suite runs files in parallel, also against a server with max_connections 100.
      api: { url: api.url, poolSize: 3, ...options.apiOptions },
      poolSize: 3,
      entities: [Widget],
      migrations: [CreateWidgets1764072100000],
      migrateApi: true,
      ...(main ? { main: main.url } : {}),
      ...options.cells,
    });
    await lib.initialize();
    const mappings = lib.getRepository(CellMapping, 'api');
    for (let i = 0; i < (options.cellCount ?? 3); i++) {
      const db = await createTestDatabase(`${label}_c${i}`);
      await migrateCellDatabase(db.url, options.cellMigrations);
      const url = options.connectionUrl ? options.connectionUrl(db.url, i) : db.url;
      const mapping = await mappings.save(
        mappings.create({ uuid: randomUUID(), name: `${label}-cell${i}`, databaseConnection: url }),
      );
      cells.push({ db, mapping });
    }
  } catch (error) {
    await lib?.destroy();
    await Promise.all([api, ...extra, ...cells.map((c) => c.db)].map((db) => db.drop()));
    throw error;
  }
  const ready = lib;
  return {
    api,
    ...(main ? { main } : {}),
    cells,
    lib: ready,
    async destroy() {
      await ready.destroy();
      await Promise.all([api, ...extra, ...cells.map((c) => c.db)].map((db) => db.drop()));
    },
  };
}

/** How many widget rows with `uuid` the database at `url` holds (0 or 1), read with a plain pg client. */
export async function widgetRowsIn(url: string, uuid: string | undefined): Promise<number> {
  return (await rowsIn(url, 'SELECT 1 FROM widgets WHERE uuid = $1', [uuid])).length;
}

/** A widget row meant for `cellUuid`. */
export function widgetFor(cellUuid: string, name = `w-${randomUUID().slice(0, 8)}`): Partial<Widget> {
  return { uuid: randomUUID(), name, intendedCell: cellUuid };
}

/** Cells mapped over a few migrated databases of one server: see `createServerFleet`. */
export interface ServerFleet {
  /** The database names, on the server. */
  databases: string[];
  /** Their URLs, with the server's credentials. */
  urls: string[];
  /** The mappings, in the API database of `lib`; mapping *i* points at database *i* mod `databases`. */
  cells: CellMapping[];
  /** The database name of each mapping, by uuid. */
  databaseOf: Map<string, string>;
}

/**
 * Creates `databases` migrated databases on `server` (a second server, or anything that can create a
 * database and return its URL) and maps `cells` cells over them in the API database of `lib`, many
 * per database: the registry keys DataSources by cell uuid, so each mapping is its own pool.
 * Cells are named `<label>-<i>`, databases `<label>_<pid>_<i>` (label: lower case and `_`).
 */
export async function createServerFleet(
  server: { createDatabase(name: string): Promise<string> },
  lib: Cells,
  options: { label: string; databases: number; cells: number },
): Promise<ServerFleet> {
  const databases: string[] = [];
  const urls: string[] = [];
  for (let i = 0; i < options.databases; i++) {
    const name = `${options.label}_${process.pid}_${i}`;
    const url = await server.createDatabase(name);
    await migrateCellDatabase(url);
    databases.push(name);
    urls.push(url);
  }
  const repo = lib.getRepository(CellMapping, 'api');
  const cells = Array.from({ length: options.cells }, (_, i) =>
    repo.create({ uuid: randomUUID(), name: `${options.label}-${i}`, databaseConnection: urls[i % urls.length]! }),
  );
  for (let i = 0; i < cells.length; i += 250) await repo.insert(cells.slice(i, i + 250));
  const databaseOf = new Map(cells.map((c, i) => [c.uuid, databases[i % databases.length]!]));
  return { databases, urls, cells, databaseOf };
}
