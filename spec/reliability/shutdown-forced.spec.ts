import type { Repository, ObjectLiteral } from 'typeorm';
import { targetCell, type Cells, type CellMapping } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { adminQuery, countConnections } from '../support/databases';
import { Gadget, createMixedFleet, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql, mysqlConnectionsTo, mysqlQuery } from '../support/mysql';
import { Widget } from '../support/widget';
import { sleep } from './support-load';

/**
 * destroy({ timeoutMs }) of a cell whose pool is saturated: 3 calls run a 3 s statement on its 3
 * pooled connections and 9 wait for one. The forced close must close the pool to new connections
 * (else the waiting callers get fresh ones and run their statements after destroy() resolved),
 * reject the waiting callers at once, stop the mapping listener although the cell's drain is stuck,
 * and resolve within a bound once the sockets are closed.
 */
const CALLS = 12;
const POOL_SIZE = 3;
const TIMEOUT_MS = 500;
/** How long after destroy() resolved every call must have settled. */
const SETTLE_BOUND_MS = 1_000;

interface Tracked {
  settled: boolean;
  outcome?: PromiseSettledResult<unknown>;
}

function track(promise: Promise<unknown>): Tracked {
  const tracked: Tracked = { settled: false };
  promise.then(
    (value) => Object.assign(tracked, { settled: true, outcome: { status: 'fulfilled', value } }),
    (reason: unknown) => Object.assign(tracked, { settled: true, outcome: { status: 'rejected', reason } }),
  );
  return tracked;
}

/** Polls `count` until it returns `n` (or 10 s pass). */
async function until(count: () => Promise<number>, n: number): Promise<void> {
  const end = Date.now() + 10_000;
  while ((await count()) !== n && Date.now() < end) await sleep(25);
}

async function listenerConnections(apiDatabase: string): Promise<number> {
  const [row] = await adminQuery<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'typeorm-cells mapping listener'",
    [apiDatabase],
  );
  return row?.n ?? -1;
}

/** Runs the scenario and checks what the server and the callers show once destroy() resolved. */
async function destroyWhileSaturated(
  lib: Cells,
  repo: Repository<ObjectLiteral>,
  cell: CellMapping,
  sleepSql: string,
  running: () => Promise<number>,
  connections: () => Promise<number>,
  listener: () => Promise<number>,
): Promise<void> {
  const calls = Array.from({ length: CALLS }, () => track(targetCell(cell, () => repo.query(sleepSql))));
  await until(running, POOL_SIZE);
  expect(await running()).toBe(POOL_SIZE);
  expect(await listener()).toBe(1);

  const started = performance.now();
  await lib.destroy({ timeoutMs: TIMEOUT_MS });
  const destroyMs = performance.now() - started;
  const left = await connections();
  const listening = await listener();

  const end = performance.now() + SETTLE_BOUND_MS;
  while (calls.some((c) => !c.settled) && performance.now() < end) await sleep(10);
  const pending = calls.filter((c) => !c.settled).length;
  const codes = calls.map((c) => (c.outcome?.status === 'rejected' ? (c.outcome.reason as { code?: string }).code : c.outcome?.status));
  const notReady = codes.filter((code) => code === 'CELLS_NOT_READY').length;

  expect({ left, listening, pending, notReady, fastEnough: destroyMs <= TIMEOUT_MS + 1_000 }).toEqual({
    left: 0,
    listening: 0,
    pending: 0,
    notReady: CALLS - POOL_SIZE,
    fastEnough: true,
  });
  // Nothing ran after destroy() resolved: the server shows no connection a little later either.
  await sleep(300);
  expect(await connections()).toBe(0);
  expect(codes.every((code) => code !== 'fulfilled')).toBe(true);
}

describe('destroy({ timeoutMs }) of a saturated PostgreSQL cell', () => {
  let world: CellWorld | undefined;
  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  it(`closes the pool, rejects the ${CALLS - POOL_SIZE} waiting calls and leaves no connection`, async () => {
    world = await createCellWorld('destroy_forced', { cellCount: 1, cells: { poolSize: POOL_SIZE, acquireTimeoutMs: 20_000 } });
    const { db, mapping } = world.cells[0]!;
    const api = world.api.name;
    await destroyWhileSaturated(
      world.lib,
      world.lib.getRepository(Widget),
      mapping,
      'SELECT pg_sleep(3)',
      async () => {
        const [row] = await adminQuery<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep(3)%'",
          [db.name],
        );
        return row?.n ?? 0;
      },
      () => countConnections(db.name),
      () => listenerConnections(api),
    );
  }, 60_000);
});

describeMysql('destroy({ timeoutMs }) of a saturated MariaDB cell', () => {
  let fleet: MixedFleet | undefined;
  afterAll(async () => {
    await fleet?.destroy();
  }, 60_000);

  it(`closes the pool, rejects the ${CALLS - POOL_SIZE} waiting calls and leaves no connection`, async () => {
    fleet = await createMixedFleet('destroy_forced', { pgCells: 0, mariadbCells: 1, cells: { poolSize: POOL_SIZE, acquireTimeoutMs: 20_000 } });
    const cell = fleet.mariadb[0]!;
    const api = new URL(fleet.apiUrl).pathname.slice(1);
    await destroyWhileSaturated(
      fleet.lib,
      fleet.lib.getRepository(Gadget),
      cell.mapping,
      'SELECT SLEEP(3)',
      async () => {
        const [row] = await mysqlQuery(
          "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'SELECT SLEEP(3)%'",
          [cell.db.name],
        );
        return Number(row?.n ?? 0);
      },
      () => mysqlConnectionsTo(cell.db.name),
      () => listenerConnections(api),
    );
  }, 60_000);
});
