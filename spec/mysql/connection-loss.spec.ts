import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { CellUnreachableError, CellsError, RequestContext, runWithContext, targetCell, type CellMapping } from '../../lib';
import { isConnectionError } from '../../lib/connection-errors';
import { sleep } from '../../dev/wait';
import { createMixedFleet, gadgetFor, Gadget, killMysqlConnections, type MixedFleet } from '../support/mixed-fleet';
import { createMysqlTestDatabase, describeMysql } from '../support/mysql';

/**
 * MariaDB connections of a cell killed on the server (`KILL <thread id>`) inside a transaction and
 * between calls: the call gets CellUnreachableError, the pool replaces the connection, and no
 * 'error' event goes unhandled (Jest fails the test on an uncaught exception).
 */
describeMysql('MariaDB cell connections lost', () => {
  let fleet: MixedFleet;
  const cell = (): CellMapping => fleet.mariadb[0]!.mapping;
  const gadgets = () => fleet.lib.getRepository(Gadget);

  beforeAll(async () => {
    fleet = await createMixedFleet('my_loss', { pgCells: 0, mariadbCells: 1 });
  }, 60_000);
  afterAll(async () => {
    await fleet?.destroy();
  }, 60_000);

  it('fails a transaction whose connection is killed between its statements with CellUnreachableError, and the next call works', async () => {
    const row = gadgetFor(cell().uuid);
    const failure = await targetCell(cell(), () =>
      fleet.lib.transaction(async () => {
        await gadgets().insert(row);
        const id = ((await gadgets().query('SELECT CONNECTION_ID() AS id')) as Array<{ id: number }>)[0]!.id;
        await killOne(id);
        await gadgets().count();
      }),
    ).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(CellUnreachableError);
    expect((failure as CellUnreachableError).message).toContain(cell().uuid);
    await expect(targetCell(cell(), () => gadgets().countBy({ uuid: row.uuid }))).resolves.toBe(0);
  });

  it('fails a statement whose connection is killed while it runs with CellUnreachableError, and the next call works', async () => {
    const running = targetCell(cell(), () => gadgets().query('SELECT SLEEP(2)'));
    await sleep(200);
    expect(await killMysqlConnections(fleet.mariadb[0]!.db.name)).toBeGreaterThan(0);
    await expect(running).rejects.toBeInstanceOf(CellUnreachableError);
    await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThanOrEqual(0);
  });

  it('disarms the query deadline of a statement whose connection is killed while it runs', async () => {
    // The module the library's mysql2 loaded (by file: mysql2's exports hide it).
    const Query = createRequire(__filename)(join(dirname(require.resolve('mysql2')), 'lib', 'commands', 'query.js')) as { prototype: { _handleTimeoutError(): void } };
    const fire = Query.prototype._handleTimeoutError;
    let fired = 0;
    Query.prototype._handleTimeoutError = function (this: unknown) {
      fired++;
      return fire.call(this);
    };
    try {
      const running = runWithContext(new RequestContext({ cell: cell(), queryTimeoutMs: 800 }), () => gadgets().query('SELECT SLEEP(3)'));
      await sleep(200);
      await killMysqlConnections(fleet.mariadb[0]!.db.name);
      await expect(running).rejects.toBeInstanceOf(CellUnreachableError);
      // mysql2 answers a lost query without clearing its deadline timer, which then holds the
      // process (the default deadline is 60 s) and calls the query back a second time.
      await sleep(900);
      expect(fired).toBe(0);
    } finally {
      Query.prototype._handleTimeoutError = fire;
    }
  });

  it('replaces idle pooled connections killed between calls: a call that gets one fails with CellUnreachableError, and the next works', async () => {
    await Promise.all(Array.from({ length: 3 }, () => targetCell(cell(), () => gadgets().query('SELECT SLEEP(0.05)'))));
    expect(await killMysqlConnections(fleet.mariadb[0]!.db.name)).toBeGreaterThanOrEqual(1);
    const first = await Promise.allSettled(Array.from({ length: 3 }, () => targetCell(cell(), () => gadgets().count())));
    const untyped = first.filter((s) => s.status === 'rejected' && !(s.reason instanceof CellUnreachableError));
    expect(untyped).toEqual([]);
    await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThanOrEqual(0);
  });

  it('survives 10 rounds of every connection killed under 8 calls in flight with only typed failures', async () => {
    const untyped: string[] = [];
    for (let round = 0; round < 10; round++) {
      const calls = Array.from({ length: 8 }, (_, i) =>
        targetCell(cell(), () =>
          i % 2 === 0
            ? gadgets().query('SELECT SLEEP(0.1)')
            : fleet.lib.transaction(async () => {
                await gadgets().insert(gadgetFor(cell().uuid));
                await sleep(30);
                await gadgets().count();
              }),
        ),
      );
      await sleep(10 + Math.floor(Math.random() * 40));
      await killMysqlConnections(fleet.mariadb[0]!.db.name);
      for (const s of await Promise.allSettled(calls)) {
        if (s.status === 'rejected' && !(s.reason instanceof CellsError)) untyped.push(String(s.reason));
      }
      await sleep(20);
    }
    expect(untyped.slice(0, 5)).toEqual([]);
    await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThan(0);
  }, 60_000);

  it('reads a cell whose database does not exist (ER_BAD_DB_ERROR) as unreachable', async () => {
    const db = await createMysqlTestDatabase('my_loss_gone');
    await db.drop();
    const gone = await fleet.lib.mappings.createCell({ name: `gone-${randomBytes(3).toString('hex')}`, databaseConnection: db.url });
    const failure = await targetCell(gone, () => gadgets().count()).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(CellUnreachableError);
    expect((failure as CellUnreachableError).message).toContain(gone.uuid);
  });

  // mysql2 marks `fatal` the errors after which its connection is unusable (a handshake refused).
  it.each([
    ['PROTOCOL_CONNECTION_LOST', true],
    ['ER_CON_COUNT_ERROR', true],
    ['ER_CON_COUNT_ERROR', false],
    ['ER_ACCESS_DENIED_ERROR', true],
    ['ER_BAD_DB_ERROR', true],
    ['ECONNREFUSED', true],
    ['ER_CONNECTION_KILLED', false],
  ])('counts mysql2 error code %s (fatal: %s) as a connection error', (code, fatal) => {
    expect(isConnectionError(Object.assign(new Error('from mysql2'), { code, fatal }))).toBe(true);
  });

  it('does not count ER_BAD_DB_ERROR of a statement naming a missing database as a connection error', async () => {
    const failure = await targetCell(cell(), () => gadgets().query('SELECT * FROM no_such_db_xyz.t')).catch((e: unknown) => e);
    expect(failure).not.toBeInstanceOf(CellsError);
    expect(isConnectionError(failure)).toBe(false);
    await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThanOrEqual(0);
  });

  it('does not count a MySQL statement error (ER_NO_SUCH_TABLE) as a connection error', async () => {
    const failure = await targetCell(cell(), () => gadgets().query('SELECT * FROM no_such_table')).catch((e: unknown) => e);
    expect(failure).not.toBeInstanceOf(CellsError);
    expect(isConnectionError(failure)).toBe(false);
  });
});

async function killOne(id: number): Promise<void> {
  const { mysqlQuery } = await import('../support/mysql');
  await mysqlQuery(`KILL ${Number(id)}`);
  // Let the socket's close reach the client before its next statement.
  await sleep(50);
}
