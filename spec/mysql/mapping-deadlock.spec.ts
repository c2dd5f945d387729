import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cells, CellsError } from '../../lib';
import { createMysqlTestDatabase, describeMysql, type MysqlTestDatabase } from '../support/mysql';

// Two processes (two Cells) on one MariaDB API database map and unmap one host and one instance
// at once. InnoDB answers some of these racing inserts and deletes with a deadlock (ER_LOCK_DEADLOCK,
// one transaction rolled back): a mapping write retries it, so a caller sees either success or a
// typed error (a concurrent map's DuplicateMappingError), never the driver's QueryFailedError.
describeMysql('mapping writes racing on a MariaDB API database', () => {
  let api: MysqlTestDatabase;
  let a: Cells;
  let b: Cells;

  beforeAll(async () => {
    api = await createMysqlTestDatabase('map_deadlock', 'mariadb');
    a = await new Cells({ api: { url: api.url, poolSize: 4 }, entities: [], migrateApi: true }).initialize();
    b = await new Cells({ api: { url: api.url, poolSize: 4 }, entities: [] }).initialize();
  });
  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
    await api?.drop();
  });

  it('fail only with typed errors while 6 workers of two processes map and unmap one host and one instance for 4 s', async () => {
    const cells = [await a.mappings.createCell({ name: 'x', databaseConnection: api.url }), await a.mappings.createCell({ name: 'y', databaseConnection: api.url })];
    const instance = randomUUID();
    const untyped: string[] = [];
    let done = 0;
    const end = Date.now() + 4_000;
    await Promise.all(
      [a, b, a, b, a, b].map(async (lib, worker) => {
        for (let i = 0; Date.now() < end; i++) {
          const cell = cells[i % 2]!.uuid;
          try {
            const op = (worker + i) % 4;
            if (op === 0) await lib.mappings.mapHost('h', cell);
            else if (op === 1) await lib.mappings.unmapHost('h');
            else if (op === 2) await lib.mappings.mapInstance({ instanceUuid: instance, cell, projectId: 'p' });
            else await lib.mappings.unmapInstance(instance);
            done++;
          } catch (error) {
            if (!(error instanceof CellsError)) untyped.push(String(error).slice(0, 120));
          }
        }
      }),
    );
    expect(done).toBeGreaterThan(100);
    expect(untyped).toEqual([]);
  }, 30_000);
});
