import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cells, CellMapping, targetCell, type CellsOptions } from '../../lib';
import { createTestDatabase, rowsIn, type TestDatabase } from '../support/databases';
import { createGadgetTable, Gadget } from '../support/mixed-fleet';
import { createMysqlTestDatabase, describeMysql, mysqlQuery, type MysqlTestDatabase } from '../support/mysql';

describeMysql('cells of PostgreSQL and MariaDB under one API database', () => {
  let api: TestDatabase;
  let pgCell: TestDatabase;
  let myCells: MysqlTestDatabase[];
  let lib: Cells;
  const mapped: CellMapping[] = [];

  beforeAll(async () => {
    api = await createTestDatabase('mixed_api');
    pgCell = await createTestDatabase('mixed_pg');
    myCells = [await createMysqlTestDatabase('mixed_my1', 'mariadb'), await createMysqlTestDatabase('mixed_my2', 'mysql')];
    for (const url of [pgCell.url, ...myCells.map((c) => c.url)]) await createGadgetTable(url);
    const options: CellsOptions = { api: api.url, entities: [Gadget], migrateApi: true, poolSize: 3 };
    lib = new Cells(options);
    await lib.initialize();
    for (const [index, url] of [pgCell.url, ...myCells.map((c) => c.url)].entries()) {
      mapped.push(await lib.mappings.createCell({ name: `mixed-${index}`, databaseConnection: url }));
    }
  });

  afterAll(async () => {
    await lib?.destroy();
    await Promise.all([api, pgCell, ...(myCells ?? [])].map((db) => db?.drop()));
  });

  it('routes interleaved writes and reads to each engine, 0 misrouted', async () => {
    const repo = lib.getRepository(Gadget);
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const cell = mapped[i % mapped.length]!;
        return targetCell(cell, async () => {
          const uuid = randomUUID();
          await repo.save({ uuid, name: `g${i}`, intendedCell: cell.uuid });
          const found = await repo.findOneBy({ uuid });
          expect(found?.intendedCell).toBe(cell.uuid);
        });
      }),
    );
    const pgRows = await rowsIn<{ intended_cell: string }>(pgCell.url, 'SELECT intended_cell FROM gadgets');
    expect(pgRows).toHaveLength(20);
    expect(new Set(pgRows.map((r) => r.intended_cell))).toEqual(new Set([mapped[0]!.uuid]));
    for (const [index, db] of myCells.entries()) {
      const rows = await mysqlQuery(`SELECT intended_cell FROM \`${db.name}\`.gadgets`);
      expect(rows).toHaveLength(20);
      expect(new Set(rows.map((r) => r.intended_cell))).toEqual(new Set([mapped[index + 1]!.uuid]));
    }
  });

  it('runs transactions with nested savepoints on a MariaDB cell', async () => {
    const repo = lib.getRepository(Gadget);
    const cell = mapped[1]!;
    const kept = randomUUID();
    const undone = randomUUID();
    await targetCell(cell, () =>
      lib.transaction(async () => {
        await repo.save({ uuid: kept, name: 'kept', intendedCell: cell.uuid });
        await lib
          .transaction(async () => {
            await repo.save({ uuid: undone, name: 'undone', intendedCell: cell.uuid });
            throw new Error('roll back the savepoint');
          })
          .catch(() => undefined);
      }),
    );
    const rows = await mysqlQuery(`SELECT uuid FROM \`${myCells[0]!.name}\`.gadgets WHERE uuid IN (?, ?)`, [kept, undone]);
    expect(rows.map((r) => r.uuid)).toEqual([kept]);
  });

  it('runs routed query builders on a MariaDB cell with its own quoting', async () => {
    const repo = lib.getRepository(Gadget);
    const builder = repo.createQueryBuilder('g').where('g.intendedCell = :cell');
    for (const cell of mapped) {
      const count = await targetCell(cell, () => builder.setParameters({ cell: cell.uuid }).getCount());
      expect(count).toBeGreaterThan(0);
    }
  });
});
