import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { Cells, CellMapping, DuplicateMappingError, targetCell } from '../../lib';
import { createTestDatabase, rowsIn, type TestDatabase } from '../support/databases';
import { Gadget, createGadgetTable } from '../support/gadget';
import { createMysqlTestDatabase, describeMysql, mysqlConnectionsLeft, mysqlConnectionsTo, mysqlQuery, type MysqlTestDatabase } from '../support/mysql';
import { sleep } from '../../dev/wait';

describeMysql('an API database on MariaDB', () => {
  let api: MysqlTestDatabase;
  let pgCell: TestDatabase;
  let myCell: MysqlTestDatabase;
  let lib: Cells;
  let pg: CellMapping;
  let my: CellMapping;

  beforeAll(async () => {
    api = await createMysqlTestDatabase('apidb_api', 'mariadb');
    pgCell = await createTestDatabase('apidb_pg');
    myCell = await createMysqlTestDatabase('apidb_my', 'mariadb');
    for (const url of [pgCell.url, myCell.url]) await createGadgetTable(url);
    lib = new Cells({ api: api.url, entities: [Gadget], migrateApi: true, poolSize: 2, mappingCache: { pollIntervalMs: 50 } });
    await lib.initialize();
    pg = await lib.mappings.createCell({ name: 'pg', databaseConnection: pgCell.url });
    my = await lib.mappings.createCell({ name: 'my', databaseConnection: myCell.url });
  });

  afterAll(async () => {
    await lib?.destroy();
    await Promise.all([api, pgCell, myCell].map((db) => db?.drop()));
  });

  it('migrates into one history of the same migration names as PostgreSQL', async () => {
    const rows = await mysqlQuery(`SELECT name FROM \`${api.name}\`.cells_api_migrations ORDER BY id`);
    expect(rows.map((r) => r.name)).toEqual([
      'ApiSchema1764072000000',
      'CellReadConnections1766000000000',
      'MappingChangeLog1767000000000',
      'CellStates1768000000000',
      'MigrationJournal1768200000000',
    ]);
    const columns = await mysqlQuery(
      `SELECT COLUMN_NAME AS c, COLUMN_TYPE AS t FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'cell_mappings'`,
      [api.name],
    );
    expect(Object.fromEntries(columns.map((r) => [r.c, r.t]))).toMatchObject({ uuid: 'char(36)', created_at: 'datetime(6)', state: 'varchar(16)' });
  });

  it('maps instances and routes calls by them to a PostgreSQL cell and a MariaDB cell', async () => {
    const repo = lib.getRepository(Gadget);
    for (const cell of [pg, my]) {
      const instanceUuid = randomUUID();
      await lib.mappings.mapInstance({ instanceUuid, cell: cell.uuid, projectId: 'p1' });
      expect((await lib.mappings.instanceCell(instanceUuid)).uuid).toBe(cell.uuid);
      await lib.targetInstanceCell(instanceUuid, () => repo.save({ uuid: instanceUuid, name: 'g', intendedCell: cell.uuid }));
      expect(await targetCell(cell, () => repo.countBy({ uuid: instanceUuid }))).toBe(1);
    }
    expect(await rowsIn(pgCell.url, 'SELECT intended_cell FROM gadgets')).toEqual([{ intended_cell: pg.uuid }]);
    const rows = await mysqlQuery(`SELECT intended_cell FROM \`${myCell.name}\`.gadgets`);
    expect(rows.map((r) => r.intended_cell)).toEqual([my.uuid]);
  });

  it('reads back the dates and flags it wrote', async () => {
    const found = await lib.mappings.cellByName('my');
    expect(found.createdAt).toBeInstanceOf(Date);
    expect(Math.abs(found.createdAt.getTime() - Date.now())).toBeLessThan(60_000);
    expect(found.disabled).toBe(false);
    const updated = await lib.mappings.updateCell(found, { disabled: true });
    expect((await lib.mappings.cellByName('my')).disabled).toBe(true);
    // TypeORM sets updated_at = CURRENT_TIMESTAMP on MySQL: whole seconds.
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(Math.floor(found.updatedAt.getTime() / 1000) * 1000);
    await lib.mappings.updateCell(found, { disabled: false });
  });

  it('refuses a second cell of the same name with DuplicateMappingError', async () => {
    await expect(lib.mappings.createCell({ name: 'pg', databaseConnection: pgCell.url })).rejects.toBeInstanceOf(DuplicateMappingError);
  });

  it('shows no password in a failed mapping write on MariaDB (mysql2 puts the filled-in statement on `sql`)', async () => {
    const sentinel = `Sntl-${randomUUID().slice(0, 8)}`;
    const url = `mariadb://u:${sentinel}@127.0.0.1:3306/nowhere`;
    await lib.mappings.createCell({ name: 'secret-dup', databaseConnection: url });
    const error = await lib.mappings.createCell({ name: 'secret-dup', databaseConnection: url }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DuplicateMappingError);
    for (const shown of [inspect(error, { depth: Infinity }), inspect(error, { depth: Infinity, showHidden: true }), String(error), JSON.stringify(error)]) {
      expect(shown).not.toContain(sentinel);
    }
  });

  it('writes change-log rows with uuids and names only, never a connection string', async () => {
    const rows = await mysqlQuery(`SELECT payload FROM \`${api.name}\`.cell_mapping_changes`);
    expect(rows.length).toBeGreaterThan(0);
    for (const { payload } of rows) {
      expect(payload).not.toContain('://');
      expect(payload).not.toContain(pgCell.url);
    }
  });

  it('prunes change-log rows older than an hour when a process starts polling', async () => {
    const table = `\`${api.name}\`.cell_mapping_changes`;
    await mysqlQuery(`INSERT INTO ${table} (payload, created_at) VALUES ('{}', NOW(6) - INTERVAL 2 HOUR), ('{}', NOW(6) - INTERVAL 50 MINUTE)`);
    const other = await new Cells({ api: api.url, entities: [Gadget] }).initialize();
    try {
      const rows = await mysqlQuery(`SELECT created_at < NOW(6) - INTERVAL 1 HOUR AS old FROM ${table} WHERE payload = '{}'`);
      expect(rows.map((r) => Number(r.old))).toEqual([0]);
    } finally {
      await other.destroy();
    }
  });

  it('stops polling and closes every API connection on destroy', async () => {
    expect(lib.mappings.cacheStats().listening).toBe(true);
    await lib.destroy();
    expect(await mysqlConnectionsLeft(api.name)).toBe(0);
    await sleep(200); // four poll intervals: no poll opens a connection again
    expect(await mysqlConnectionsTo(api.name)).toBe(0);
  });
});
