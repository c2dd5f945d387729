import { BasicTracerProvider, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Cells, targetCell } from '../lib';
import { createCellWorld, widgetFor, widgetRowsIn, type CellWorld } from './support/cells';
import { enableContext } from './support/telemetry';
import { Widget } from './support/widget';

/*
 * A broken SDK (a span processor, an instrument or an observable callback that throws) must never
 * change what a routed call returns or throws, nor make a committed write look failed.
 */

type Mode = 'none' | 'onStart' | 'onEnd';
let mode: Mode = 'none';
const brokenProcessor: SpanProcessor = {
  onStart: () => {
    if (mode === 'onStart') throw new Error('processor onStart failed');
  },
  onEnd: () => {
    if (mode === 'onEnd') throw new Error('processor onEnd failed');
  },
  forceFlush: async () => undefined,
  shutdown: async () => undefined,
};

const throws = () => {
  throw new Error('instrument failed');
};
/** A meter whose every instrument throws, as a broken metrics SDK would; keeps its observable callbacks. */
const callbacks: Array<(result: { observe(...args: unknown[]): void }) => void> = [];
const brokenMeter = {
  createCounter: () => ({ add: throws }),
  createHistogram: () => ({ record: throws }),
  createObservableUpDownCounter: () => ({}),
  createObservableCounter: () => ({}),
  createObservableGauge: () => ({}),
  addBatchObservableCallback: (callback: (typeof callbacks)[number]) => void callbacks.push(callback),
  removeBatchObservableCallback: () => undefined,
};

let world: CellWorld;
let disable: () => void;

beforeAll(async () => {
  disable = enableContext();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [brokenProcessor] });
  world = await createCellWorld('brokensdk', {
    cellCount: 2,
    cells: { telemetry: { tracerProvider, meterProvider: { getMeter: () => brokenMeter } } },
  });
}, 60_000);
afterAll(async () => {
  mode = 'none';
  await world?.destroy();
  disable?.();
});

describe.each(['onStart', 'onEnd'] as const)('a span processor that throws in %s, and instruments that throw', (broken) => {
  beforeEach(() => {
    mode = broken;
  });
  afterEach(() => {
    mode = 'none';
  });

  it('leaves a routed save, also one that opens the cell, and its read-back unchanged: the row written once', async () => {
    const widgets = world.lib.getRepository(Widget);
    const cell = world.cells[0]!.mapping;
    world.lib.evictCell(cell.uuid);
    const saved = await targetCell(cell, () => widgets.save(widgets.create(widgetFor(cell.uuid))));
    expect(await widgetRowsIn(world.cells[0]!.db.url, saved.uuid)).toBe(1);
    const found = await targetCell(cell, () => widgets.findOneBy({ uuid: saved.uuid }));
    expect(found?.name).toBe(saved.name);
  });

  it('leaves a transaction committed, and a failing call failing with its own error', async () => {
    const widgets = world.lib.getRepository(Widget);
    const cell = world.cells[1]!.mapping;
    const saved = await targetCell(cell, () =>
      world.lib.transaction(async (manager) => manager.save(Widget, manager.create(Widget, widgetFor(cell.uuid)))),
    );
    expect(await widgetRowsIn(world.cells[1]!.db.url, saved.uuid)).toBe(1);
    await expect(targetCell(cell, () => widgets.query('SELECT no_such_column FROM widgets'))).rejects.toThrow(/no_such_column/);
  });

  it('leaves a scatter-gather result unchanged', async () => {
    const widgets = world.lib.getRepository(Widget);
    const gathered = await world.lib.scatterGather(
      world.cells.map((c) => c.mapping),
      () => widgets.query('SELECT 1 AS one'),
    );
    expect([...gathered.values()]).toEqual([[{ one: 1 }], [{ one: 1 }]]);
  });

  it('lets Cells initialise', async () => {
    const cells = new Cells({
      api: { url: world.api.url, poolSize: 1 },
      entities: [Widget],
      telemetry: { tracerProvider: new BasicTracerProvider({ spanProcessors: [brokenProcessor] }), meterProvider: { getMeter: () => brokenMeter } },
    });
    try {
      await expect(cells.initialize()).resolves.toBe(cells);
    } finally {
      await cells.destroy();
    }
  });
});

it('an observable callback whose result throws does not throw', () => {
  expect(callbacks.length).toBeGreaterThan(0);
  for (const callback of callbacks) expect(() => callback({ observe: throws })).not.toThrow();
});
