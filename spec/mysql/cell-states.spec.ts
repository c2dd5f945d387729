import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { ObjectLiteral, Repository } from 'typeorm';
import { CellReadOnlyError, Cells, targetCell, type CellMapping, type CellState } from '../../lib';
import { apiMigrationSource, behavesAs, migrateApiBeforeCellStates, msUntilSeen, runLoad, stateChangeFailures, stopLoads } from '../support/cell-states';
import { Gadget, createGadgetTable, gadgetFor } from '../support/gadget';
import { createMysqlTestDatabase, describeMysql, mysqlQuery, type MysqlTestDatabase } from '../support/mysql';
import { reportFigure } from '../reliability/figures';
import { startStateWatcher, wallClockMs } from '../support/state-watcher';
import { sleep } from '../../dev/wait';

// Cell states with the API database on MariaDB (changes reach other processes through the change
// log, polled) and a MariaDB cell, whose read-only connections run `SET SESSION TRANSACTION READ ONLY`.
describeMysql('cell states on MariaDB', () => {
  let api: MysqlTestDatabase;
  let cellDb: MysqlTestDatabase;
  let writer: Cells;
  let cell: CellMapping;

  const cellsOn = (pollIntervalMs?: number) =>
    new Cells({
      api: api.url,
      entities: [Gadget],
      poolSize: 4,
      ...(pollIntervalMs === undefined ? {} : { mappingCache: { pollIntervalMs } }),
    });
  const repoOf = (lib: Cells) => lib.getRepository(Gadget) as unknown as Repository<ObjectLiteral>;

  async function rowsInCell(): Promise<number> {
    const [row] = await mysqlQuery(`SELECT COUNT(*) AS n FROM \`${cellDb.name}\`.gadgets`);
    return Number(row!['n']);
  }

  beforeAll(async () => {
    api = await createMysqlTestDatabase('cstates_api', 'mariadb');
    cellDb = await createMysqlTestDatabase('cstates_cell', 'mariadb');
    await createGadgetTable(cellDb.url);
    writer = new Cells({ api: api.url, entities: [Gadget], poolSize: 4, migrateApi: true });
    await writer.initialize();
    cell = await writer.mappings.createCell({ name: 'my-states', databaseConnection: cellDb.url });
  }, 60_000);

  afterAll(async () => {
    await writer?.destroy();
    await Promise.all([api, cellDb].map((db) => db?.drop()));
  }, 60_000);

  afterEach(async () => {
    await writer.mappings.setCellState(cell.uuid, 'active');
  });

  it('refuses routed writes to a read-only cell typed, a raw write on the server, and serves reads', async () => {
    await targetCell(cell, () => writer.getRepository(Gadget).insert(gadgetFor(cell.uuid)));
    await writer.mappings.setCellState(cell.uuid, 'read-only');
    const before = await rowsInCell();
    const repo = writer.getRepository(Gadget);
    const writes: Array<() => Promise<unknown>> = [
      () => repo.insert(gadgetFor(cell.uuid)),
      () => repo.save(repo.create(gadgetFor(cell.uuid))),
      () => repo.update({ name: 'x' }, { size: 2 }),
      () => repo.delete({ name: 'x' }),
      () => repo.createQueryBuilder().insert().values(gadgetFor(cell.uuid)).execute(),
      () => writer.transaction(() => repo.insert(gadgetFor(cell.uuid))),
    ];
    const errors = await Promise.all(
      Array.from({ length: 5 }, () => writes.map((write) => targetCell(cell, write).then(() => undefined, (e: unknown) => e))).flat(),
    );
    for (const error of errors) expect(error).toBeInstanceOf(CellReadOnlyError);
    expect(await targetCell(cell, () => repo.count())).toBe(before);
    const raw = `INSERT INTO gadgets (uuid, name, intended_cell) VALUES ('${randomUUID()}', 'raw', '${cell.uuid}')`;
    // Writes the library does not read: refused by the server, typed, its refusal kept as cause.
    const serverRefused: Array<() => Promise<unknown>> = [
      () => repo.query(raw),
      () => writer.transaction(() => repo.query(raw)),
      () => writer.transaction((m) => m.save(Gadget, m.create(Gadget, gadgetFor(cell.uuid)))),
      () => writer.transaction((m) => m.getRepository(Gadget).insert(gadgetFor(cell.uuid))),
      () => writer.transaction((m) => m.query(raw)),
    ];
    for (const write of serverRefused) {
      const error = await targetCell(cell, write).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(CellReadOnlyError);
      expect((error as Error).message).toMatch(/refused by its database/);
      expect(((error as Error).cause as { driverError?: { errno?: number } }).driverError?.errno).toBe(1792);
    }
    expect(await rowsInCell()).toBe(before);
  });

  it("keeps a raw SET of one caller from making the pooled connections writable for later callers", async () => {
    await writer.mappings.setCellState(cell.uuid, 'read-only');
    const before = await rowsInCell();
    const repo = writer.getRepository(Gadget);
    for (const sql of ['SET SESSION TRANSACTION READ WRITE', 'SET SESSION tx_read_only = 0']) {
      await targetCell(cell, () => repo.query(sql));
      for (let i = 0; i < 8; i++) {
        const raw = `INSERT INTO gadgets (uuid, name, intended_cell) VALUES ('${randomUUID()}', 'after-set', '${cell.uuid}')`;
        await expect(targetCell(cell, () => repo.query(raw))).rejects.toMatchObject({ code: 'CELLS_CELL_READ_ONLY' });
      }
    }
    expect(await rowsInCell()).toBe(before);
  });

  it.each([
    ['the default poll interval (500 ms)', undefined, 1000],
    ['a 200 ms poll interval', 200, 1000],
  ])('reaches a second Cells through the change log with %s, under load; running transactions commit', async (what, pollIntervalMs, bound) => {
    const other = cellsOn(pollIntervalMs);
    await other.initialize();
    try {
      const loads = [writer, other].map((lib, index) =>
        runLoad({
          process: index === 0 ? 'writer' : 'other',
          lib,
          repo: repoOf(lib),
          cell,
          row: (uuid) => gadgetFor(uuid) as ObjectLiteral & { uuid: string },
          writers: 2,
          readers: 1,
          transactions: 1,
          holdMs: 150,
        }),
      );
      const delays: number[] = [];
      await sleep(200);
      for (const state of ['read-only', 'active', 'disabled', 'active'] as CellState[]) {
        await writer.mappings.setCellState(cell.uuid, state);
        expect(await behavesAs(writer, repoOf(writer), cell, state)).toBe(true);
        delays.push(await msUntilSeen(other, repoOf(other), cell, state));
        await sleep(150);
      }
      const { unexpected, runningFailed } = stateChangeFailures(await stopLoads(loads));
      expect(unexpected).toEqual([]);
      expect(runningFailed).toEqual([]);
      const max = Math.max(...delays);
      reportFigure(`cell states (MariaDB API, change log, ${what})`, 'ms until a second Cells applies a state change, max of 4', Math.round(max), `< ${bound}`);
      expect(max).toBeLessThan(bound);
    } finally {
      await other.destroy();
    }
  }, 60_000);

  it('reaches a second OS process through the change log at the default poll interval', async () => {
    const watcher = await startStateWatcher(api.url, cell.uuid, 'gadgets');
    try {
      const delays: number[] = [];
      for (const state of ['read-only', 'active', 'disabled', 'active'] as CellState[]) {
        const started = wallClockMs();
        const seen = watcher.seen(state);
        await writer.mappings.setCellState(cell.uuid, state);
        delays.push((await seen) - started);
      }
      const max = Math.max(...delays);
      reportFigure('cell states (MariaDB API, change log, the default poll interval (500 ms))', 'ms from setCellState to a call of a second process behaving so, max of 4', Math.round(max), '< 1000');
      expect(max).toBeLessThan(1000);
    } finally {
      await watcher.stop();
    }
  }, 30_000);

  it('converts disabled flags of existing rows in the CellStates migration, and back', async () => {
    const db = await createMysqlTestDatabase('cstates_mig', 'mariadb');
    try {
      await migrateApiBeforeCellStates({ type: 'mariadb', url: db.url });
      const [off, on] = [randomUUID(), randomUUID()];
      await mysqlQuery(
        `INSERT INTO \`${db.name}\`.cell_mappings (uuid, name, database_connection, disabled) VALUES (?, 'a-off', 'mysql://h/a', 1), (?, 'b-on', 'mysql://h/b', 0)`,
        [off, on],
      );
      const ds = apiMigrationSource({ type: 'mariadb', url: db.url });
      await ds.initialize();
      try {
        expect((await ds.runMigrations()).map((m) => m.name)).toEqual(['CellStates1768000000000']);
        const states = await mysqlQuery(`SELECT uuid, state FROM \`${db.name}\`.cell_mappings ORDER BY name`);
        expect(states.map((r) => ({ ...r }))).toEqual([
          { uuid: off, state: 'disabled' },
          { uuid: on, state: 'active' },
        ]);
        await expect(mysqlQuery(`UPDATE \`${db.name}\`.cell_mappings SET state = 'paused'`)).rejects.toThrow(/ck_cell_mappings_state/);
        await ds.undoLastMigration();
        const flags = await mysqlQuery(`SELECT uuid, disabled FROM \`${db.name}\`.cell_mappings ORDER BY name`);
        expect(flags.map((r) => ({ ...r }))).toEqual([
          { uuid: off, disabled: 1 },
          { uuid: on, disabled: 0 },
        ]);
      } finally {
        await ds.destroy();
      }
    } finally {
      await db.drop();
    }
  });
});
