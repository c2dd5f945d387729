import 'reflect-metadata';
import type { DataSource } from 'typeorm';
import { Cells, targetCell } from '../../lib';
import { cellDataSource } from '../support/mixed-fleet';
import { Gadget, createGadgetTable } from '../support/gadget';
import { startForwarder } from '../support/forwarder';
import { createMysqlTestDatabase, describeMysql, mysqlConnectionsLeft, type MysqlTestDatabase } from '../support/mysql';

/**
 * mysql2's pool calls back from end() once it has queued each connection's COM_QUIT, before the
 * packet is even written: a DataSource's destroy() resolved with its sockets open and the server
 * still listing the connections. destroy() now resolves once every socket is closed.
 */
/** The sockets of the mysql2 pool of `dataSource` (private fields of mysql2). */
function socketsOf(dataSource: DataSource): Array<{ closed: boolean }> {
  const pool = (dataSource.driver as unknown as { pool: { _allConnections: { length: number; get(i: number): { stream: { closed: boolean } } } } }).pool;
  return Array.from({ length: pool._allConnections.length }, (_, i) => pool._allConnections.get(i).stream);
}

describeMysql('destroy() of Cells with MariaDB databases', () => {
  let api: MysqlTestDatabase;
  let cellDb: MysqlTestDatabase;

  beforeAll(async () => {
    api = await createMysqlTestDatabase('destroy_api', 'mariadb');
    cellDb = await createMysqlTestDatabase('destroy_cell', 'mariadb');
    await createGadgetTable(cellDb.url);
  });
  afterAll(async () => {
    await Promise.all([api, cellDb].map((db) => db?.drop()));
  });

  it('resolves once every socket of the API and cell pools is closed and the server let go of every connection, after calls that used 8 connections at once (5 rounds)', async () => {
    const left: number[] = [];
    const open: number[] = [];
    for (let round = 0; round < 5; round++) {
      const lib = await new Cells({ api: api.url, entities: [Gadget], migrateApi: true, poolSize: 8, mappingCache: { pollIntervalMs: 50 } }).initialize();
      const cell = round === 0 ? await lib.mappings.createCell({ name: 'c', databaseConnection: cellDb.url }) : await lib.mappings.cellByName('c');
      const gadgets = lib.getRepository(Gadget);
      await Promise.all(Array.from({ length: 8 }, () => targetCell(cell, () => gadgets.query('SELECT SLEEP(0.05)'))));
      await Promise.all(Array.from({ length: 8 }, () => lib.mappings.cellByName('c')));
      const sockets = [await cellDataSource(lib, cell), (lib as unknown as { apiDataSource: DataSource }).apiDataSource].flatMap(socketsOf);
      expect(sockets.length).toBeGreaterThanOrEqual(9);
      await lib.destroy();
      open.push(sockets.filter((socket) => !socket.closed).length);
      left.push((await mysqlConnectionsLeft(api.name)) + (await mysqlConnectionsLeft(cellDb.name)));
    }
    expect({ open, left }).toEqual({ open: [0, 0, 0, 0, 0], left: [0, 0, 0, 0, 0] });
  });

  it('past its deadline, on a server that stopped answering mid-statement, resolves with no socket of the cell pool left open (idle ones included)', async () => {
    const forwarder = await startForwarder(cellDb.url);
    const lib = await new Cells({ api: api.url, entities: [Gadget], poolSize: 4 }).initialize();
    try {
      const cell = await lib.mappings.createCell({ name: 'stalled', databaseConnection: forwarder.url(cellDb.url) });
      const gadgets = lib.getRepository(Gadget);
      await Promise.all(Array.from({ length: 4 }, () => targetCell(cell, () => gadgets.query('SELECT SLEEP(0.02)'))));
      const sockets = socketsOf(await cellDataSource(lib, cell));
      const running = targetCell(cell, () => gadgets.query('SELECT SLEEP(0.5)')).catch((error: unknown) => error);
      await new Promise((resolve) => setTimeout(resolve, 50));
      forwarder.stall();
      await lib.destroy({ timeoutMs: 200 });
      expect(sockets.filter((socket) => !socket.closed).length).toBe(0);
      await running;
    } finally {
      await lib.destroy();
      forwarder.flow();
      await forwarder.close();
    }
  });
});

