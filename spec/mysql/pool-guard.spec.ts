import { CellBusyError, QueryTimeoutError, RequestContext, runWithContext, targetCell, type CellMapping } from '../../lib';
import { sleep } from '../../dev/wait';
import { cellDataSource, createMixedFleet, Gadget, gadgetFor, mysqlThreadsOf, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql, mysqlAdmin } from '../support/mysql';

/** What is read of mysql2's pool. */
interface Mysql2Pool {
  _allConnections: { length: number };
  _freeConnections: { length: number };
  _connectionQueue: { length: number };
}

/** The mysql2 pool of `cell`'s DataSource (opened now if needed). */
async function poolOf(fleet: MixedFleet, cell: CellMapping): Promise<Mysql2Pool> {
  const ds = await cellDataSource(fleet.lib, cell);
  return (ds.driver as unknown as { pool: Mysql2Pool }).pool;
}

describeMysql('the guarded mysql2 pool of a MariaDB cell', () => {
  let fleet: MixedFleet;
  const cell = (): CellMapping => fleet.mariadb[0]!.mapping;
  const gadgets = () => fleet.lib.getRepository(Gadget);

  beforeAll(async () => {
    fleet = await createMixedFleet('my_pool', {
      pgCells: 0,
      mariadbCells: 1,
      cells: { poolSize: 1, acquireTimeoutMs: 200, queryTimeoutMs: 0 },
    });
  }, 60_000);
  afterAll(async () => {
    await fleet?.destroy();
  }, 60_000);

  describe('busy', () => {
    it('fails a call that waits longer than acquireTimeoutMs for the one connection with CellBusyError, and leaves no waiter in mysql2’s queue', async () => {
      const pool = await poolOf(fleet, cell());
      const holder = targetCell(cell(), () => gadgets().query('SELECT SLEEP(3)'));
      await sleep(100);
      try {
        const started = performance.now();
        const waiters = await Promise.allSettled(Array.from({ length: 5 }, () => targetCell(cell(), () => gadgets().count())));
        const waited = performance.now() - started;
        for (const w of waiters) {
          expect(w.status).toBe('rejected');
          expect((w as PromiseRejectedResult).reason).toBeInstanceOf(CellBusyError);
        }
        expect(waited).toBeLessThan(1500);
        expect(pool._connectionQueue.length).toBe(0);
        await holder;
        expect(pool._connectionQueue.length).toBe(0);
        expect(pool._allConnections.length).toBeLessThanOrEqual(1);
        await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThanOrEqual(0);
      } finally {
        await holder.catch(() => undefined);
      }
    }, 20_000);
  });

  describe('query deadline', () => {
    it('fails SELECT SLEEP(5) past the context’s queryTimeoutMs with QueryTimeoutError within the deadline and slack', async () => {
      const started = performance.now();
      const failure = await runWithContext(new RequestContext({ cell: cell(), queryTimeoutMs: 300 }), () =>
        gadgets().query('SELECT SLEEP(5)'),
      ).catch((e: unknown) => e);
      const took = performance.now() - started;
      expect(failure).toBeInstanceOf(QueryTimeoutError);
      expect((failure as QueryTimeoutError).timeoutMs).toBe(300);
      expect(took).toBeLessThan(300 + 1000);
      // The connection was closed rather than handed to this call with SLEEP still running.
      const next = performance.now();
      await expect(targetCell(cell(), () => gadgets().count())).resolves.toBeGreaterThanOrEqual(0);
      expect(performance.now() - next).toBeLessThan(1000);
    }, 20_000);

    it('applies the Cells queryTimeoutMs option to a MariaDB cell', async () => {
      const timed = await createMixedFleet('my_pool_qt', { pgCells: 0, mariadbCells: 1, cells: { queryTimeoutMs: 400 } });
      try {
        const repo = timed.lib.getRepository(Gadget);
        const started = performance.now();
        const failure = await targetCell(timed.mariadb[0]!.mapping, () => repo.query('SELECT SLEEP(5)')).catch((e: unknown) => e);
        expect(failure).toBeInstanceOf(QueryTimeoutError);
        expect(performance.now() - started).toBeLessThan(400 + 1000);
        await expect(targetCell(timed.mariadb[0]!.mapping, () => repo.count())).resolves.toBe(0);
        // The server-side statement of the closed connection is not left holding a pooled slot.
        await sleep(100);
        const threads = await mysqlThreadsOf(timed.mariadb[0]!.db.name);
        expect(threads.length).toBeLessThanOrEqual(3 + 1);
      } finally {
        await timed.destroy();
      }
    }, 30_000);
  });

  describe('release inside a transaction', () => {
    it('never hands a connection with an open transaction back to the pool: the next plain write autocommits', async () => {
      const lost = gadgetFor(cell().uuid, 'rolled-back');
      await expect(
        targetCell(cell(), () =>
          fleet.lib.transaction(async () => {
            await gadgets().insert(lost);
            throw new Error('callback failed after a write');
          }),
        ),
      ).rejects.toThrow('callback failed after a write');
      const plain = gadgetFor(cell().uuid, 'plain');
      await targetCell(cell(), () => gadgets().insert(plain));
      // Seen from a second connection: committed, and the rolled-back row is not.
      const admin = await mysqlAdmin();
      try {
        const [rows] = await admin.query(`SELECT uuid FROM \`${fleet.mariadb[0]!.db.name}\`.gadgets WHERE uuid IN (?, ?)`, [
          lost.uuid,
          plain.uuid,
        ]);
        expect((rows as Array<{ uuid: string }>).map((r) => r.uuid)).toEqual([plain.uuid]);
      } finally {
        await admin.end();
      }
    });

    it('destroys a query runner’s connection released while its transaction is open, and the next write autocommits', async () => {
      const ds = await cellDataSource(fleet.lib, cell());
      const runner = ds.createQueryRunner();
      await runner.connect();
      await runner.startTransaction();
      const id = ((await runner.query('SELECT CONNECTION_ID() AS id')) as Array<{ id: number }>)[0]!.id;
      const open = gadgetFor(cell().uuid, 'open-tx');
      await runner.query('INSERT INTO gadgets (uuid, name, intended_cell) VALUES (?, ?, ?)', [open.uuid, open.name, open.intendedCell]);
      await runner.release();
      const plain = gadgetFor(cell().uuid, 'after-release');
      const used = await targetCell(cell(), async () => {
        await gadgets().insert(plain);
        return ((await gadgets().query('SELECT CONNECTION_ID() AS id')) as Array<{ id: number }>)[0]!.id;
      });
      expect(used).not.toBe(id);
      const admin = await mysqlAdmin();
      try {
        const [rows] = await admin.query(`SELECT uuid FROM \`${fleet.mariadb[0]!.db.name}\`.gadgets WHERE uuid IN (?, ?)`, [
          open.uuid,
          plain.uuid,
        ]);
        expect((rows as Array<{ uuid: string }>).map((r) => r.uuid)).toEqual([plain.uuid]);
      } finally {
        await admin.end();
      }
    });
  });
});
