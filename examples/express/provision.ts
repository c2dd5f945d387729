import { DataSource } from 'typeorm';
import { Client, escapeIdentifier } from 'pg';
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
 * Creates database `name` on the server at `serverUrl` unless it exists, and returns its URL.
 * @throws the pg error when the server refuses (no CREATEDB right, unreachable).
 */
export async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  const client = new Client({ connectionString: serverUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) {
      try {
        await client.query(`CREATE DATABASE ${escapeIdentifier(name)}`);
      } catch (error) {
        // 42P04: created by someone else since the check.
        if ((error as { code?: unknown }).code !== '42P04') throw error;
      }
    }
  } finally {
    await client.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

/** Applies the example's cell migrations (the servers table) to the database at `url`; idempotent. */
export async function migrateCell(url: string): Promise<void> {
  const ds = new DataSource({ type: 'postgres', url, migrations: CELL_MIGRATIONS, entities: [] });
  await ds.initialize();
  try {
    await ds.runMigrations({ transaction: 'all' });
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
