import { targetCell } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, type CellWorld } from '../support/cells';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Attack: a call that gave up with CellBusyError leaves its pg-pool waiter queued (pg-pool's own
// queue timeout is disabled). When the held connection is released, pg-pool hands it to every
// abandoned waiter in turn, synchronously, each handing it straight back.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('atk_zomb', { cellCount: 1, cells: { poolSize: 1, acquireTimeoutMs: 20 } });
});
afterAll(async () => {
  // Since the pool guard leaves pg-pool's queue when a caller gives up, destroy() and the drop of
  // the world's databases are quick (they once blocked on thousands of abandoned waiters).
  await world?.destroy();
});

const pgPool = () => {
  // The cell's pg-pool, to read its counters (opened by the first call).
  const ds = (world.lib as unknown as { registry: { lru: { get(k: string): { dataSource: { driver: { master: { waitingCount: number; totalCount: number } } } } } } })
    .registry.lru.get(world.cells[0]!.mapping.uuid);
  return ds!.dataSource.driver.master;
};

describe('calls that timed out waiting for a busy pool', () => {
  it('leave no abandoned waiters behind, and the pool serves again once the holder ends', async () => {
    const cell = world.cells[0]!.mapping;
    const repo = world.lib.getRepository(Widget);
    await targetCell(cell, () => repo.count());
    let releaseHolder!: () => void;
    const holding = new Promise<void>((r) => (releaseHolder = r));
    const holder = targetCell(cell, () => world.lib.transaction(async () => {
      await repo.count();
      await holding;
    }));
    await sleep(100);
    const N = Number(process.env.ATK_N ?? 3000);
    let outcomes: PromiseSettledResult<number>[];
    try {
      outcomes = await targetCell(cell, () => Promise.allSettled(Array.from({ length: N }, () => repo.count())));
    } catch (e) {
      releaseHolder();
      throw e;
    }
    const codes = new Set(outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { code?: string }).code : 'ok')));
    expect([...codes]).toEqual(['CELLS_CELL_BUSY']);
    // Every caller has given up: none should still be queued in pg-pool.
    const waiting = pgPool().waitingCount;
    releaseHolder();
    const holderOutcome = await holder.then(() => 'ok', (e: unknown) => String(e));
    // And the pool still works (bounded: a wedged pool never answers).
    const after = await Promise.race([
      targetCell(cell, () => repo.count()).then(() => 'ok', (e: unknown) => String(e)),
      sleep(5000).then(() => 'no answer within 5 s'),
    ]);
    expect({ waiting, holderOutcome, after }).toEqual({ waiting: 0, holderOutcome: 'ok', after: 'ok' });
    await expectNoConnectionInTransaction(world.cells[0]!.db.name);
  });
});
