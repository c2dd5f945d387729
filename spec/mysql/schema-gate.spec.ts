import 'reflect-metadata';
import { DataSource, type MigrationInterface, type QueryRunner } from 'typeorm';
import { Cells, RaisedError, SchemaBehindError, SchemaUnreadableError, targetCell, type CellMapping } from '../../lib';
import { Gadget, createGadgetTable } from '../support/gadget';
import { createMysqlTestDatabase, describeMysql, mysqlQuery, type MysqlTestDatabase } from '../support/mysql';
import { reportFigure } from '../reliability/figures';
import { eventually, sleep } from '../../dev/wait';

/** The one cell migration of this spec. */
class AddGadgetNotes1769600000000 implements MigrationInterface {
  name = 'AddGadgetNotes1769600000000';
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE gadget_notes (note varchar(64) NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE gadget_notes');
  }
}

// The schema gate with the API database and a cell on MariaDB: the cell's missing migrations table
// (MariaDB's ER_NO_SUCH_TABLE) counts as behind, and the report of its migration reaches a second
// Cells through the change log, polled every 100 ms.
describeMysql('the schema gate on MariaDB', () => {
  let api: MysqlTestDatabase;
  let cellDb: MysqlTestDatabase;
  let writer: Cells;
  let other: Cells;
  let cell: CellMapping;

  const cellsOn = (migrateApi = false) =>
    new Cells({
      api: api.url,
      entities: [Gadget],
      migrations: [AddGadgetNotes1769600000000],
      requireSchema: 'latest',
      poolSize: 2,
      migrateApi,
      mappingCache: { pollIntervalMs: 100 },
    });
  /** Applies the spec's migration to the cell (once: TypeORM skips an applied one). */
  const migrateCell = async (): Promise<void> => {
    const ds = new DataSource({ type: 'mysql', url: cellDb.url.replace(/^mariadb:/, 'mysql:'), migrations: [AddGadgetNotes1769600000000], entities: [] });
    await ds.initialize();
    try {
      await ds.runMigrations();
    } finally {
      await ds.destroy();
    }
  };
  const count = (lib: Cells) => targetCell(cell, () => lib.getRepository(Gadget).count());

  beforeAll(async () => {
    api = await createMysqlTestDatabase('sgate_api', 'mariadb');
    cellDb = await createMysqlTestDatabase('sgate_cell', 'mariadb');
    await createGadgetTable(cellDb.url);
    writer = await cellsOn(true).initialize();
    other = await cellsOn().initialize();
    cell = await writer.mappings.createCell({ name: 'my-gate', databaseConnection: cellDb.url });
  }, 60_000);

  afterAll(async () => {
    await other?.destroy();
    await writer?.destroy();
    await Promise.all([api, cellDb].map((db) => db?.drop()));
  }, 60_000);

  it('refuses calls to a cell without a migrations table, typed, also in scatter-gather, until its migration is reported', async () => {
    const error: unknown = await count(other).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SchemaBehindError);
    expect((error as SchemaBehindError).message).toContain('AddGadgetNotes1769600000000');
    expect((error as SchemaBehindError).message).toContain(cell.uuid);
    const gathered = await other.scatterGather([cell], () => other.getRepository(Gadget).count());
    expect(gathered.get(cell.uuid)).toBeInstanceOf(RaisedError);
    await expect(count(writer)).rejects.toBeInstanceOf(SchemaBehindError);

    await migrateCell();
    const opened = other.stats().opened;
    const started = performance.now();
    await writer.mappings.reportMigrated(cell.uuid);
    expect(await count(writer)).toBe(0);
    for (;;) {
      if (await count(other).then(() => true, () => false)) break;
      if (performance.now() - started > 5_000) throw new Error('the second Cells never let calls through');
      await sleep(5);
    }
    const ms = Math.round(performance.now() - started);
    console.log(`schema gate on MariaDB: ${ms} ms from reportMigrated to a call of a second Cells passing (poll 100 ms)`);
    reportFigure('schema gate (MariaDB API, change log polled every 100 ms)', 'ms from reportMigrated to a call of a second Cells passing', ms, '< 1000');
    expect(ms).toBeLessThan(1000);
    expect(other.stats().opened).toBe(opened);
  }, 30_000);

  it('refuses calls typed (CELLS_SCHEMA_UNREADABLE, ER_BAD_FIELD_ERROR) to a cell whose migrations table has no name column, until reported', async () => {
    const table = `\`${cellDb.name}\`.migrations`;
    await migrateCell();
    const lib = await cellsOn().initialize();
    await mysqlQuery(`ALTER TABLE ${table} RENAME COLUMN name TO name_aside`);
    try {
      const outcomes = await Promise.all(Array.from({ length: 10 }, () => count(lib).then(() => undefined, (e: unknown) => e)));
      for (const error of outcomes) {
        expect(error).toBeInstanceOf(SchemaUnreadableError);
        expect((error as SchemaUnreadableError).reason).toBe('ER_BAD_FIELD_ERROR');
        expect((error as SchemaUnreadableError).message).toContain(cell.uuid);
      }
      const gathered = await lib.scatterGather([cell], () => lib.getRepository(Gadget).count());
      expect((gathered.get(cell.uuid) as RaisedError).error).toBeInstanceOf(SchemaUnreadableError);
      expect(lib.stats().opened).toBe(1);
      await mysqlQuery(`ALTER TABLE ${table} RENAME COLUMN name_aside TO name`);
      await writer.mappings.reportMigrated(cell.uuid);
      await eventually(() => count(lib).then(() => true, () => false), 5_000);
    } finally {
      await mysqlQuery(`ALTER TABLE ${table} RENAME COLUMN name_aside TO name`).catch(() => undefined);
      await lib.destroy();
    }
  }, 30_000);
});
