import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { CellUnreachableError, targetCell, type CellMapping, type CellsLogEvent } from '../../lib';
import { cellDataSource, createMixedFleet, Gadget, gadgetFor, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql, mysqlQuery } from '../support/mysql';

/**
 * A MariaDB user with a sentinel password, mapped as a cell: the sentinel must appear in no error,
 * no `util.inspect` of the Cells object (without showHidden), no logger event, no JSON of mappings.
 */
describeMysql('a MariaDB cell password', () => {
  const sentinel = `Sntl${randomBytes(9).toString('hex')}`;
  const user = `cells_sec_${randomBytes(4).toString('hex')}`;
  const events: CellsLogEvent[] = [];
  const shown: string[] = [];
  let fleet: MixedFleet;
  let cell: CellMapping;

  /** Every way an error is shown. */
  const showError = (error: unknown): void => {
    shown.push(String(error), (error as Error)?.stack ?? '', inspect(error, { depth: 10 }));
    try {
      shown.push(JSON.stringify(error) ?? '');
    } catch {
      // A cycle: inspect covered it.
    }
  };
  const asUser = (url: string, password = sentinel, port?: number): string => {
    const parsed = new URL(url);
    parsed.username = user;
    parsed.password = password;
    if (port !== undefined) parsed.port = String(port);
    return parsed.toString();
  };

  beforeAll(async () => {
    for (const host of ['%', 'localhost', '127.0.0.1']) {
      await mysqlQuery(`CREATE USER '${user}'@'${host}' IDENTIFIED BY '${sentinel}'`);
    }
    fleet = await createMixedFleet('my_sec', {
      pgCells: 0,
      mariadbCells: 1,
      cells: { logger: (event) => void events.push(event), connectTimeoutMs: 2000 },
      mariadbUrl: (url) => asUser(url),
    });
    for (const host of ['%', 'localhost', '127.0.0.1']) {
      await mysqlQuery(`GRANT ALL ON \`${fleet.mariadb[0]!.db.name}\`.* TO '${user}'@'${host}'`);
    }
    cell = fleet.mariadb[0]!.mapping;
  }, 60_000);
  afterAll(async () => {
    await fleet?.destroy();
    for (const host of ['%', 'localhost', '127.0.0.1']) await mysqlQuery(`DROP USER IF EXISTS '${user}'@'${host}'`);
  }, 60_000);

  it('routes through the cell whose URL carries the sentinel', async () => {
    const gadgets = fleet.lib.getRepository(Gadget);
    await targetCell(cell, () => gadgets.insert(gadgetFor(cell.uuid)));
    expect(await targetCell(cell, () => gadgets.count())).toBe(1);
    expect(cell.databaseConnection).toContain(sentinel);
  });

  it('fails with a wrong password as CellUnreachableError without the password', async () => {
    const wrong = `Wrong${randomBytes(6).toString('hex')}`;
    const bad = await fleet.lib.mappings.createCell({ name: `sec-bad-${randomBytes(3).toString('hex')}`, databaseConnection: asUser(fleet.mariadb[0]!.db.url, wrong) });
    const failure = await targetCell(bad, () => fleet.lib.getRepository(Gadget).count()).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CellUnreachableError);
    showError(failure);
    expect(shown.join('\n')).not.toContain(wrong);
    expect(String(failure)).toMatch(/Access denied/);
  });

  it('fails on an unreachable port as CellUnreachableError without the password', async () => {
    const closed = await fleet.lib.mappings.createCell({
      name: `sec-port-${randomBytes(3).toString('hex')}`,
      databaseConnection: asUser(fleet.mariadb[0]!.db.url, sentinel, 1),
    });
    const failure = await targetCell(closed, () => fleet.lib.getRepository(Gadget).count()).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(CellUnreachableError);
    showError(failure);
  });

  it('prints no password in util.inspect of Cells (depth 10, showHidden false), the DataSource options or JSON of mappings', async () => {
    const ds = await cellDataSource(fleet.lib, cell);
    shown.push(inspect(fleet.lib, { showHidden: false, depth: 10 }));
    shown.push(inspect(ds.options, { showHidden: false, depth: 10 }));
    shown.push(inspect((ds.driver as unknown as { pool: unknown }).pool, { showHidden: false, depth: 6 }));
    shown.push(JSON.stringify(await fleet.lib.mappings.allCells()), JSON.stringify(await fleet.lib.mappings.cellByUuid(cell.uuid)));
    expect(JSON.stringify(await fleet.lib.mappings.cellByUuid(cell.uuid))).toContain(':***@');
  });

  it("keeps the password out of mysql2's pool config, even from inspect with showHidden and getters", async () => {
    const ds = await cellDataSource(fleet.lib, cell);
    const pool = (ds.driver as unknown as { pool: { config: { connectionConfig: object } } }).pool;
    // Each new connection's copy of the config gets it for its handshake only (then dropped).
    expect(Object.getOwnPropertyNames(pool.config.connectionConfig)).not.toContain('password');
    expect(inspect(pool.config.connectionConfig, { showHidden: true, getters: true })).not.toContain(sentinel);
    expect(inspect(pool, { showHidden: true, getters: true, depth: 6 })).not.toContain(sentinel);
    expect(inspect(fleet.lib, { showHidden: true, depth: Infinity, getters: true })).not.toContain(sentinel);
  });

  it('holds no sentinel in anything shown, nor in any logger event', () => {
    shown.push(...events.map((e) => JSON.stringify(e)), ...events.map((e) => inspect(e, { depth: 10 })));
    expect(events.length).toBeGreaterThan(0);
    const leaks = shown.filter((text) => text.includes(sentinel)).map((text) => text.slice(Math.max(0, text.indexOf(sentinel) - 200), text.indexOf(sentinel) + 40));
    expect(leaks).toEqual([]);
  });
});
