import 'reflect-metadata';
import type { DataSource } from 'typeorm';
import { Cells, RequestContext, runWithContext, type CellMapping, type CellsOptions } from '../../lib';
import type { RegistryEntry } from '../../lib/registry';
import { createTestDatabase, rowsIn, type TestDatabase } from './databases';
import { Gadget, createGadgetTable } from './gadget';
import { createMysqlTestDatabase, mysqlQuery, type MysqlTestDatabase } from './mysql';

export { Gadget, createGadgetTable, gadgetFor } from './gadget';

/** One cell of a mixed fleet: its database, engine and mapping. */
export interface FleetCell {
  engine: 'postgres' | 'mariadb';
  db: TestDatabase | MysqlTestDatabase;
  mapping: CellMapping;
  /** Every gadget row of its database, read directly (a plain pg or mysql2 connection). */
  gadgets(): Promise<Array<{ uuid: string; intended_cell: string; deleted_at: Date | null }>>;
}

/** An API database (PostgreSQL) with PostgreSQL and MariaDB cells mapped in it, and `Cells` over them. */
export interface MixedFleet {
  lib: Cells;
  /** The API database's URL. */
  apiUrl: string;
  cells: FleetCell[];
  /** The PostgreSQL cells, then the MariaDB ones. */
  pg: FleetCell[];
  mariadb: FleetCell[];
  /** Destroys `lib` and drops every database. */
  destroy(): Promise<void>;
}

/** Options of `createMixedFleet`. */
export interface MixedFleetOptions {
  /** PostgreSQL cells. Default: 1. */
  pgCells?: number;
  /** MariaDB cells. Default: 1. */
  mariadbCells?: number;
  /** Extra options for `new Cells()`. */
  cells?: Partial<CellsOptions>;
  /** Rewrites a MariaDB cell's URL before it is mapped (a user with a password, a closed port). */
  mariadbUrl?: (url: string, index: number) => string;
}

/**
 * Creates an API database, `pgCells` PostgreSQL and `mariadbCells` MariaDB cell databases with the
 * gadgets table, maps them, and initializes `Cells` over them (poolSize 3, Gadget as the entity).
 */
export async function createMixedFleet(label: string, options: MixedFleetOptions = {}): Promise<MixedFleet> {
  const api = await createTestDatabase(`${label}_api`);
  const databases: Array<TestDatabase | MysqlTestDatabase> = [api];
  let lib: Cells | undefined;
  try {
    const pgDbs = await Promise.all(Array.from({ length: options.pgCells ?? 1 }, (_, i) => createTestDatabase(`${label}_pg${i}`)));
    databases.push(...pgDbs);
    const myDbs: MysqlTestDatabase[] = [];
    for (let i = 0; i < (options.mariadbCells ?? 1); i++) myDbs.push(await createMysqlTestDatabase(`${label}_my${i}`, 'mariadb'));
    databases.push(...myDbs);
    for (const db of [...pgDbs, ...myDbs]) await createGadgetTable(db.url);
    lib = new Cells({ api: { url: api.url, poolSize: 3 }, entities: [Gadget], migrateApi: true, poolSize: 3, ...options.cells });
    await lib.initialize();
    const pg: FleetCell[] = [];
    for (const [i, db] of pgDbs.entries()) {
      const mapping = await lib.mappings.createCell({ name: `${label}-pg${i}`, databaseConnection: db.url });
      pg.push({ engine: 'postgres', db, mapping, gadgets: () => rowsIn(db.url, 'SELECT uuid, intended_cell, deleted_at FROM gadgets') });
    }
    const mariadb: FleetCell[] = [];
    for (const [i, db] of myDbs.entries()) {
      const url = options.mariadbUrl ? options.mariadbUrl(db.url, i) : db.url;
      const mapping = await lib.mappings.createCell({ name: `${label}-my${i}`, databaseConnection: url });
      mariadb.push({
        engine: 'mariadb',
        db,
        mapping,
        gadgets: async () =>
          (await mysqlQuery(`SELECT uuid, intended_cell, deleted_at FROM \`${db.name}\`.gadgets`)) as Array<{
            uuid: string;
            intended_cell: string;
            deleted_at: Date | null;
          }>,
      });
    }
    const ready = lib;
    return {
      lib: ready,
      apiUrl: api.url,
      cells: [...pg, ...mariadb],
      pg,
      mariadb,
      async destroy() {
        await ready.destroy();
        await Promise.all(databases.map((db) => db.drop()));
      },
    };
  } catch (error) {
    await lib?.destroy();
    await Promise.all(databases.map((db) => db.drop()));
    throw error;
  }
}

/** The server thread ids of the connections to MariaDB database `dbName` (but the caller's). */
export async function mysqlThreadsOf(dbName: string): Promise<number[]> {
  const rows = await mysqlQuery('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()', [dbName]);
  return rows.map((r) => Number(r.id));
}

/** Kills every connection to MariaDB database `dbName`; returns how many. */
export async function killMysqlConnections(dbName: string): Promise<number> {
  const ids = await mysqlThreadsOf(dbName);
  for (const id of ids) await mysqlQuery(`KILL ${id}`).catch(() => undefined);
  return ids.length;
}

/** The DataSource the registry holds for `cell` in `lib`, opened now if needed. */
export async function cellDataSource(lib: Cells, cell: CellMapping): Promise<DataSource> {
  return runWithContext(new RequestContext({ cell }), async () => {
    const entry = (await lib.route('main')) as RegistryEntry;
    entry.release();
    return entry.dataSource;
  });
}

/** Connections to MariaDB database `dbName` with an open InnoDB transaction. */
export async function mysqlConnectionsInTransaction(dbName: string): Promise<number> {
  const rows = await mysqlQuery(
    `SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX t
       JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.DB = ?`,
    [dbName],
  );
  return Number(rows[0]?.n ?? 0);
}
