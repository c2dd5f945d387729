import { DataSource } from 'typeorm';
import { CELL0_UUID, RequestContext, runWithContext, type CellMapping, type Cells } from '../../lib';
import { createServer } from './create-server';
import { CELL_MIGRATIONS } from './migrations';

/** A cell to register: its name, the URL of its (existing) database, and optionally a fixed uuid. */
export interface CellSpec {
  name: string;
  url: string;
  uuid?: string;
}

/**
 * Applies the example's cell migrations (the servers table) to the database at `url` (`postgres://`,
 * `mysql://` or `mariadb://`); idempotent.
 */
export async function migrateCell(url: string): Promise<void> {
  const type = url.startsWith('postgres') ? 'postgres' : url.startsWith('mariadb') ? 'mariadb' : 'mysql';
  const ds = new DataSource({ type, url, migrations: CELL_MIGRATIONS, entities: [] });
  await ds.initialize();
  try {
    // MySQL runs DDL outside transactions: one transaction per migration is all it can give.
    await ds.runMigrations({ transaction: type === 'postgres' ? 'all' : 'each' });
  } finally {
    await ds.destroy();
  }
}

/**
 * Maps a cell in the API database, or points an existing cell of that name at `spec.url`; cell0 is
 * always given its reserved uuid.
 */
export async function registerCell(cells: Cells, spec: CellSpec): Promise<CellMapping> {
  const existing = (await cells.mappings.allCells()).find((cell) => cell.name === spec.name);
  if (existing === undefined) {
    const uuid = spec.name === 'cell0' ? CELL0_UUID : spec.uuid;
    return cells.mappings.createCell({ name: spec.name, databaseConnection: spec.url, ...(uuid ? { uuid } : {}) });
  }
  if (existing.databaseConnection === spec.url) return existing;
  const updated = await cells.mappings.updateCell(existing.uuid, { databaseConnection: spec.url });
  cells.evictCell(updated.uuid);
  return updated;
}

/**
 * Creates `names.length` servers in project `projectId`, spread round-robin over `targets`, through
 * the same path as `POST /servers`.
 */
export async function seedServers(
  cells: Cells,
  targets: readonly CellMapping[],
  names: readonly string[],
  projectId: string,
): Promise<void> {
  const log = (line: string) => console.error(line);
  await runWithContext(new RequestContext({ projectId }), async () => {
    for (const [i, name] of names.entries()) {
      await createServer(cells, targets[i % targets.length]!, name, log);
    }
  });
}
