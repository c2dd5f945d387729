import { inspect } from 'node:util';
import type { DataSource, Logger } from 'typeorm';
import {
  RaisedError,
  isCellFailure,
  targetCell,
  type Cells,
  type CellMapping,
  type CellsLogEvent,
} from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { eventually, openPeer } from '../support/peers';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { withTimeout } from '../../dev/wait';

// Scenario 8: user hooks that throw. A `logger` that throws on any registry event, a TypeORM logger
// that throws on every call, and scatter-gather callbacks that throw oddities must change nothing:
// calls succeed, evicted DataSources close, destroy() resolves, and no rejection goes unhandled.

const SCENARIO = '8 throwing hooks';
const EVENTS = ['open', 'evict', 'close', 'open-failed', 'close-failed'] as const;
type EventType = (typeof EVENTS)[number];

let world: CellWorld;
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
let casesRun = 0;

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  world = await createCellWorld('hooks', { cellCount: 2 });
  // A mapped cell whose database does not exist: its open fails on the server. (An unmapped uuid
  // no longer gets as far as an open: it is refused before it takes a registry slot.)
  const url = new URL(cellA().databaseConnection);
  url.pathname = `/cells_hooks_missing_${process.pid}`;
  missing = await world.lib.mappings.createCell({ name: `hooks-missing-${process.pid}`, databaseConnection: url.toString() });
}, 60_000);

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await world?.destroy();
});

const cellA = (): CellMapping => world.cells[0]!.mapping;
const cellB = (): CellMapping => world.cells[1]!.mapping;
let missing: CellMapping;

/** The DataSource the registry holds for `cell` (opened by a call first). */
async function dataSourceOf(cells: Cells, cell: CellMapping): Promise<DataSource> {
  return targetCell(cell, () => cells.getRepository(Widget).manager.connection);
}

/** Lets pending rejections reach the process's unhandledRejection handlers. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** True once every DataSource opened so far is closed but the ones still open in the LRU. */
function settledClosing(cells: Cells): boolean {
  const stats = cells.stats();
  return stats.draining === 0 && stats.closed === stats.opened - stats.open;
}

/**
 * Opens cell A, then cell B (evicting A under `maxOpenCells: 1`), opens a cell whose database is
 * missing (an open that fails, evicting B for its slot), reopens B, closes its DataSource behind the registry's back
 * and evicts it (a close that fails), then destroys: every step must behave exactly as with no
 * logger at all.
 */
async function exercise(cells: Cells): Promise<void> {
  const widgets = cells.getRepository(Widget);
  expect(await targetCell(cellA(), () => widgets.count())).toBe(0);
  expect(await targetCell(cellB(), () => widgets.count())).toBe(0);
  await eventually(() => settledClosing(cells), 5000);
  expect(cells.stats()).toMatchObject({ open: 1, opened: 2, closed: 1, evictions: 1 });
  await expect(targetCell(missing, () => widgets.count())).rejects.toMatchObject({
    code: 'CELLS_CELL_UNREACHABLE',
  });
  await eventually(() => settledClosing(cells), 5000);
  expect(await targetCell(cellB(), () => widgets.count())).toBe(0);
  const b = await dataSourceOf(cells, cellB());
  expect(b.isInitialized).toBe(true);
  await b.destroy();
  cells.evictCell(cellB().uuid);
  await eventually(() => settledClosing(cells), 5000);
  expect(cells.stats()).toMatchObject({ open: 0, opened: 3, closed: 3, failedOpens: 1 });
  // Every slot came back, that of the failed close included: A opens again under the bound of one.
  expect(await targetCell(cellA(), () => widgets.count())).toBe(0);
  await withTimeout(cells.destroy(), 10_000, 'destroy()');
  await settle();
}

describe('a logger that throws', () => {
  it.each([...EVENTS.map((e) => [e] as [EventType | 'every event']), ['every event']])(
    "on '%s' changes nothing",
    async (throwOn) => {
      const seen: string[] = [];
      const before = unhandled.length;
      const cells = await openPeer(world, {
        maxOpenCells: 1,
        logger: (event: CellsLogEvent) => {
          seen.push(event.type);
          if (throwOn === 'every event' || event.type === throwOn) {
            throw new Error(`logger exploded on ${event.type}`);
          }
        },
      });
      try {
        await exercise(cells);
      } finally {
        await withTimeout(cells.destroy(), 10_000, 'destroy() in cleanup');
      }
      for (const type of EVENTS) expect(seen).toContain(type);
      expect(unhandled.slice(before)).toEqual([]);
      casesRun++;
    },
    30_000,
  );

  it('that is async and rejects changes nothing', async () => {
    const before = unhandled.length;
    const cells = await openPeer(world, {
      maxOpenCells: 1,
      logger: (async (event: CellsLogEvent) => {
        throw new Error(`async logger exploded on ${event.type}`);
      }) as unknown as (event: CellsLogEvent) => void,
    });
    try {
      await exercise(cells);
    } finally {
      await withTimeout(cells.destroy(), 10_000, 'destroy() in cleanup');
    }
    expect(unhandled.slice(before)).toEqual([]);
    casesRun++;
  }, 30_000);
});

describe('a TypeORM logger that throws on every call', () => {
  it('fails no routed call, API lookup or write', async () => {
    const exploding = new Proxy({} as Logger, {
      get: () => () => {
        throw new Error('TypeORM logger exploded');
      },
    });
    const cells = await openPeer(world, {
      cellDataSourceOptions: { logging: 'all', logger: exploding },
    });
    try {
      const widgets = cells.getRepository(Widget);
      expect(await targetCell(cellA(), () => widgets.count())).toBe(0);
      await targetCell(cellA(), () => cells.transaction(() => widgets.count()));
      expect((await cells.mappings.cellByUuid(cellA().uuid)).uuid).toBe(cellA().uuid);
    } finally {
      await withTimeout(cells.destroy(), 10_000, 'destroy()');
    }
    casesRun++;
  }, 30_000);
});

describe('a scatter-gather callback that throws', () => {
  const oddities: Array<[string, () => unknown]> = [
    ['an Error, synchronously', () => new Error('sync boom')],
    ['null', () => null],
    ['undefined', () => undefined],
    ['a string', () => 'plain string'],
    [
      'an object whose toString and message throw',
      () => ({
        toString() {
          throw new Error('toString exploded');
        },
        get message(): string {
          throw new Error('message exploded');
        },
      }),
    ],
  ];

  it.each(oddities)('(%s) yields RaisedError that can be printed', async (_what, thrown) => {
    const result = await world.lib.scatterGather([cellA(), cellB()], (cell) => {
      if (cell.uuid === cellA().uuid) throw thrown();
      return world.lib.getRepository(Widget).count();
    });
    const failure = result.get(cellA().uuid);
    expect(failure).toBeInstanceOf(RaisedError);
    expect(isCellFailure(result.get(cellB().uuid))).toBe(false);
    const raised = failure as RaisedError;
    expect(typeof raised.message).toBe('string');
    expect(() => JSON.stringify(raised)).not.toThrow();
    expect(() => inspect(raised, { depth: Infinity, showHidden: true })).not.toThrow();
    casesRun++;
  });
});

describe('throwing hooks', () => {
  it('reports its figures', async () => {
    await settle();
    reportFigure(SCENARIO, 'cases run', casesRun, '>= 13');
    reportFigure(SCENARIO, 'unhandled rejections', unhandled.length, 'must be 0');
    expect(casesRun).toBeGreaterThanOrEqual(13);
    expect(unhandled).toEqual([]);
  });
});
