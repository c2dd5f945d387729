import { randomUUID } from 'node:crypto';
import { targetCell, type Cells, type CellsLogEvent, type CellsStats } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { adminQuery, rowsIn } from '../support/databases';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import {
  ConnectionSampler,
  SlotPeak,
  createLoadWorld,
  runConcurrently,
  seededRandom,
  sleep,
  weightedPicker,
} from './support-load';

// Scenario 3 of "Reliability and security": far more cells than `maxOpenCells` under concurrent
// load, so DataSources are evicted while calls, transactions and long queries run on them.
const SCENARIO = 'eviction churn';
const CELL_COUNT = 40;
const MAX_OPEN_CELLS = 4;
const POOL_SIZE = 3;
const TASKS = 64;
const OPERATIONS = 2_000;
/** The long queries hold their DataSource this long, so evictions wait for them. */
const LONG_QUERY_SECONDS = 0.15;

const OPERATION_WEIGHTS = { insert: 4, read: 3, transaction: 2, long: 1 };
type OperationKind = keyof typeof OPERATION_WEIGHTS;

interface CellLedger {
  uuid: string;
  url: string;
  committed: string[];
}

describe('eviction churn', () => {
  let world: CellWorld;
  let ledgers: CellLedger[];
  let databases: string[];
  let failures: unknown[];
  let peakConnections: number;
  let connectionSamples: number;
  const slots = new SlotPeak();
  let stats: CellsStats;
  let rowsWrong: number;
  let leftAfterDestroy: number;
  let seconds: number;
  let operationsRun: number;

  beforeAll(async () => {
    world = await createLoadWorld('churn', {
      cellCount: CELL_COUNT,
      cells: {
        maxOpenCells: MAX_OPEN_CELLS,
        poolSize: POOL_SIZE,
        // Every registry event (open, evict, close) is a moment the slot count changes.
        // (world is unset until createLoadWorld returns: no cell opens before.)
        logger: () => world && slots.record(world.lib.stats()),
      },
    });
    ledgers = world.cells.map((c) => ({ uuid: c.mapping.uuid, url: c.db.url, committed: [] }));
    databases = world.cells.map((c) => c.db.name);
    await churn(world.lib);
  }, 240_000);

  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  /** Runs the load, reads every cell database back, destroys `lib`, and keeps the figures. */
  async function churn(lib: Cells): Promise<void> {
    const widgets = lib.getRepository(Widget);
    const random = seededRandom(0xc0ffee);
    const pickKind = weightedPicker(OPERATION_WEIGHTS, random);
    const operations: Record<OperationKind, (cell: CellLedger) => Promise<unknown>> = {
      insert: async (cell) => {
        const uuid = randomUUID();
        await widgets.insert({ uuid, name: 'churn', intendedCell: cell.uuid });
        cell.committed.push(uuid);
      },
      read: (cell) => {
        const uuid = cell.committed[Math.floor(random() * cell.committed.length)];
        return uuid === undefined
          ? widgets.count()
          : widgets.findOneByOrFail({ uuid, intendedCell: cell.uuid });
      },
      transaction: async (cell) => {
        const uuid = randomUUID();
        await lib.transaction(async () => {
          await widgets.insert({ uuid, name: 'churn-tx', intendedCell: cell.uuid });
          await sleep(10);
          await widgets.findOneByOrFail({ uuid });
        });
        cell.committed.push(uuid);
      },
      long: () => widgets.query('SELECT pg_sleep($1)', [LONG_QUERY_SECONDS]),
    };

    const sampler = await new ConnectionSampler(databases).start(10);
    const statsTimer = setInterval(() => slots.record(lib.stats()), 5);
    failures = [];
    let reserved = 0;
    const started = performance.now();
    try {
      await runConcurrently(TASKS, async () => {
        while (reserved < OPERATIONS) {
          reserved++;
          const cell = ledgers[Math.floor(random() * ledgers.length)]!;
          const kind = pickKind();
          try {
            await targetCell(cell.uuid, () => operations[kind](cell));
          } catch (error) {
            failures.push(error);
          }
          slots.record(lib.stats());
        }
      });
    } finally {
      seconds = (performance.now() - started) / 1000;
      clearInterval(statsTimer);
      peakConnections = await sampler.stop();
      connectionSamples = sampler.samples;
    }
    stats = lib.stats();

    rowsWrong = 0;
    for (const cell of ledgers) {
      const rows = await rowsIn<{ uuid: string; intended_cell: string }>(
        cell.url,
        'SELECT uuid, intended_cell FROM widgets',
      );
      const committed = new Set(cell.committed);
      const present = new Set(rows.filter((r) => r.intended_cell === cell.uuid).map((r) => r.uuid));
      const misrouted = rows.length - present.size;
      const missing = cell.committed.filter((uuid) => !present.has(uuid)).length;
      const unexpected = [...present].filter((uuid) => !committed.has(uuid)).length;
      rowsWrong += misrouted + missing + unexpected;
    }

    await lib.destroy();
    const [row] = await adminQuery<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1)',
      [[...databases, world.api.name]],
    );
    leftAfterDestroy = row?.n ?? -1;
    operationsRun = reserved;
  }

  it(`runs ${OPERATIONS} operations from ${TASKS} tasks over ${CELL_COUNT} cells`, () => {
    reportFigure(SCENARIO, 'operations', operationsRun, `>= ${OPERATIONS}`);
    reportFigure(SCENARIO, 'operations per second', Math.round(operationsRun / seconds), '> 0');
    expect(operationsRun).toBeGreaterThanOrEqual(OPERATIONS);
  });

  it('fails no query because of an eviction', () => {
    reportFigure(SCENARIO, 'queries failed', failures.length, 'must be 0');
    reportFigure(SCENARIO, 'rows missing, misrouted or unexpected', rowsWrong, 'must be 0');
    expect(failures).toEqual([]);
    expect(rowsWrong).toBe(0);
  });

  it('evicts, and so opens DataSources many times over', () => {
    reportFigure(SCENARIO, 'evictions', stats.evictions, `>= ${CELL_COUNT}`);
    reportFigure(SCENARIO, 'DataSources opened', stats.opened, `>= ${CELL_COUNT}`);
    expect(stats.evictions).toBeGreaterThanOrEqual(CELL_COUNT);
    expect(stats.opened).toBeGreaterThanOrEqual(CELL_COUNT);
    expect(stats.failedOpens).toBe(0);
  });

  it('never holds more than maxOpenCells DataSources, counting draining and opening ones', () => {
    reportFigure(
      SCENARIO,
      'peak open + draining + opening DataSources',
      slots.peak,
      `<= ${MAX_OPEN_CELLS}`,
    );
    expect(slots.peak).toBeGreaterThan(0);
    expect(slots.peak).toBeLessThanOrEqual(MAX_OPEN_CELLS);
  });

  it('never holds more than maxOpenCells × poolSize server connections to the cells', () => {
    const bound = MAX_OPEN_CELLS * POOL_SIZE;
    reportFigure(
      SCENARIO,
      `peak server connections to the ${CELL_COUNT} cell databases (${connectionSamples} samples)`,
      peakConnections,
      `<= ${bound}`,
    );
    expect(connectionSamples).toBeGreaterThan(10);
    expect(peakConnections).toBeGreaterThan(0);
    expect(peakConnections).toBeLessThanOrEqual(bound);
  });

  it('leaves no server connection after destroy()', () => {
    reportFigure(SCENARIO, 'connections left after destroy()', leftAfterDestroy, 'must be 0');
    expect(leftAfterDestroy).toBe(0);
  });
});

describe('cells.stats() read in a logger event', () => {
  const seen: Array<{ type: CellsLogEvent['type']; stats: CellsStats }> = [];
  let world: CellWorld;
  beforeAll(async () => {
    world = await createCellWorld('churn_stats', {
      cellCount: 3,
      cells: {
        maxOpenCells: 2,
        logger: (event) => world && seen.push({ type: event.type, stats: world.lib.stats() }),
      },
    });
    const widgets = world.lib.getRepository(Widget);
    for (const i of [0, 1, 2, 0]) await targetCell(world.cells[i]!.mapping, () => widgets.count());
    await world.lib.destroy();
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  it('counts an evicted DataSource once, as draining, within maxOpenCells', () => {
    const evictions = seen.filter((e) => e.type === 'evict');
    expect(evictions.length).toBeGreaterThanOrEqual(2);
    for (const { stats } of seen)
      expect(stats.open + stats.draining + stats.opening).toBeLessThanOrEqual(2);
  });

  it('counts a DataSource as open in its own open event', () => {
    const opens = seen.filter((e) => e.type === 'open').map((e) => e.stats);
    expect(opens.map((s) => s.opened)).toEqual([1, 2, 3, 4]);
    for (const stats of opens) expect(stats.open).toBeGreaterThanOrEqual(1);
    expect(opens[0]).toMatchObject({ open: 1, opening: 0 });
  });
});
