import 'reflect-metadata';
import { Client } from 'pg';
import { API_MIGRATIONS as MIGRATION_CLASSES, Cells, MigrationLockTimeoutError } from '../lib';
import { MIGRATION_LOCK_KEY, mysqlMigrationLockName } from '../lib/migration-lock';
import { assertCliBuilt, createProject, runCli } from './support/cli';
import { createTestDatabase, rowsIn, type TestDatabase } from './support/databases';
import { createMysqlTestDatabase, describeMysql, mysqlAdmin, mysqlQuery, type MysqlTestDatabase } from './support/mysql';

/** Processes (here: Cells instances, each with its own API pool) starting at once on one fresh API database. */
const RUNNERS = 4;
const API_MIGRATIONS = MIGRATION_CLASSES.map((migration) => migration.name);

async function initializeAtOnce(api: string): Promise<Cells[]> {
  const all = Array.from({ length: RUNNERS }, () => new Cells({ api, entities: [], migrateApi: true, poolSize: 2 }));
  const results = await Promise.allSettled(all.map((cells) => cells.initialize()));
  await Promise.all(all.map((cells) => cells.destroy()));
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
  expect(failures).toEqual([]);
  return all;
}

describe('migrateApi: several initialize() at once on one fresh API database', () => {
  let api: TestDatabase;

  beforeEach(async () => {
    api = await createTestDatabase('migrate_api');
  });

  afterEach(() => api?.drop());

  it('all succeed, and each migration is applied once', async () => {
    await initializeAtOnce(api.url);
    const rows = await rowsIn<{ name: string }>(api.url, 'SELECT name FROM cells_api_migrations ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(API_MIGRATIONS);
  });

  it('all succeed alongside `typeorm-cells api-db migrate` runs in child processes', async () => {
    assertCliBuilt();
    const project = await createProject({ 'cells.config.js': `module.exports = { api: ${JSON.stringify(api.url)}, entities: [] };` });
    try {
      const [runs] = await Promise.all([
        Promise.all([runCli(['api-db', 'migrate'], project.dir), runCli(['api-db', 'migrate'], project.dir)]),
        initializeAtOnce(api.url),
      ]);
      expect(runs.map((r) => ({ code: r.code, stderr: r.stderr }))).toEqual([
        { code: 0, stderr: '' },
        { code: 0, stderr: '' },
      ]);
    } finally {
      await project.remove();
    }
    const rows = await rowsIn<{ name: string }>(api.url, 'SELECT name FROM cells_api_migrations ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(API_MIGRATIONS);
  });

  it('fails with MigrationLockTimeoutError past migrateApiLockTimeoutMs while another session holds the lock', async () => {
    const holder = new Client({ connectionString: api.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
      const cells = new Cells({ api: api.url, entities: [], migrateApi: true, migrateApiLockTimeoutMs: 300 });
      const started = Date.now();
      const error = await cells.initialize().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MigrationLockTimeoutError);
      expect((error as MigrationLockTimeoutError).code).toBe('CELLS_MIGRATION_LOCK_TIMEOUT');
      expect((error as Error).message).toContain('migrateApiLockTimeoutMs');
      expect((error as Error).message).not.toContain('postgres://');
      expect(Date.now() - started).toBeLessThan(5_000);
      await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
      // The failed start left nothing behind: a second one migrates.
      await (await cells.initialize()).destroy();
    } finally {
      await holder.end();
    }
  });
});

describeMysql('migrateApi: several initialize() at once on one fresh MariaDB API database', () => {
  let api: MysqlTestDatabase;

  beforeEach(async () => {
    api = await createMysqlTestDatabase('migrate_api', 'mariadb');
  });

  afterEach(() => api?.drop());

  it('all succeed, and each migration is applied once', async () => {
    await initializeAtOnce(api.url);
    const rows = await mysqlQuery(`SELECT name FROM \`${api.name}\`.cells_api_migrations ORDER BY id`);
    expect(rows.map((r) => r.name)).toEqual(API_MIGRATIONS);
  });

  it('fails with MigrationLockTimeoutError past migrateApiLockTimeoutMs while another session holds the lock', async () => {
    const holder = await mysqlAdmin();
    try {
      await holder.query('SELECT GET_LOCK(?, 10)', [mysqlMigrationLockName(api.name)]);
      const cells = new Cells({ api: api.url, entities: [], migrateApi: true, migrateApiLockTimeoutMs: 1_000 });
      const error = await cells.initialize().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MigrationLockTimeoutError);
      expect((error as Error).message).toContain('migrateApiLockTimeoutMs');
    } finally {
      await holder.end();
    }
  });
});
