import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cells, type CellMapping, type CellsOptions } from '../lib';
import { DEFAULT_PROJECT } from '../examples/express/context';
import { Server } from '../examples/express/entities/Server';
import { migrateCell } from '../examples/express/provision';
import { createTestDatabase, rowsIn, type TestDatabase } from '../spec/support/databases';

/** A cell of the example app's schema: its database and its mapping. */
export interface ExampleBenchCell {
  db: TestDatabase;
  mapping: CellMapping;
}

/**
 * An API database with cells holding the example app's `servers` table, for the benchmarks that
 * drive the example app or its lookup path. Every `Cells` it opens is destroyed with it.
 */
export interface ExampleBenchWorld {
  api: TestDatabase;
  cells: ExampleBenchCell[];
  /** Another initialized `Cells` over the API database, as a second process would have. */
  open(options?: Partial<CellsOptions>): Promise<Cells>;
  /**
   * Writes `count` servers of the example's default project, round-robin over the cells, and their
   * instance mappings, with plain SQL (no cache is told, as none has looked them up yet).
   * @returns their uuids, in creation order.
   */
  seed(count: number): Promise<string[]>;
  destroy(): Promise<void>;
}

/**
 * Creates the API database (migrated through the library), `cellCount` migrated cell databases of
 * the example app and their mappings.
 */
export async function createExampleBenchWorld(
  label: string,
  cellCount: number,
): Promise<ExampleBenchWorld> {
  const api = await createTestDatabase(`${label}_api`);
  const dbs: TestDatabase[] = [];
  const opened: Cells[] = [];
  const destroy = async () => {
    await Promise.all(opened.map((c) => c.destroy()));
    await Promise.all([api, ...dbs].map((db) => db.drop()));
  };
  const open = async (options: Partial<CellsOptions> = {}) => {
    const cells = new Cells({ api: api.url, entities: [Server], ...options });
    opened.push(cells);
    return cells.initialize();
  };
  try {
    const admin = await open({ migrateApi: true });
    const cells: ExampleBenchCell[] = [];
    for (let i = 0; i < cellCount; i++) {
      const db = await createTestDatabase(`${label}_c${i}`);
      dbs.push(db);
      await migrateCell(db.url);
      cells.push({
        db,
        mapping: await admin.mappings.createCell({
          name: `${label}-cell${i}`,
          databaseConnection: db.url,
        }),
      });
    }
    const seed = async (count: number) => {
      const uuids = Array.from({ length: count }, () => randomUUID());
      await Promise.all(
        cells.map(async (cell, c) => {
          const mine = uuids.filter((_, i) => i % cells.length === c);
          await rowsIn(
            cell.db.url,
            `INSERT INTO servers (uuid, name, project_id) SELECT u, 'bench-' || left(u::text, 8), $2 FROM unnest($1::uuid[]) AS u`,
            [mine, DEFAULT_PROJECT],
          );
          await rowsIn(cell.db.url, 'ANALYZE servers');
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
    return { api, cells, open, seed, destroy };
  } catch (error) {
    await destroy();
    throw error;
  }
}
