import { randomUUID } from 'node:crypto';
import {
  CellUnreachableError,
  DidNotRespond,
  InvalidArgumentError,
  RaisedError,
  RequestContext,
  ScatterGatherAbortedError,
  UnknownCellError,
  getContext,
  isCellFailure,
  runWithContext,
  type CellMapping,
} from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { adminQuery, rowsIn } from './support/databases';
import { closedPort } from './support/peers';
import { Widget } from './support/widget';
import { sleep } from '../dev/wait';

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('scatter', { cellCount: 4 });
});
afterAll(async () => {
  await world?.destroy();
});

function mappings(): CellMapping[] {
  return world.cells.map((c) => c.mapping);
}

/** Ends the sleeps a test left running in the cells, so they do not hold pool connections. */
async function endSleeps(): Promise<void> {
  await adminQuery(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1) AND query LIKE 'SELECT pg_sleep%'`,
    [world.cells.map((c) => c.db.name)],
  );
}

/** A mapped cell whose server is down: its URL names a loopback port nothing listens on. */
async function downCell(): Promise<CellMapping> {
  const port = await closedPort();
  return world.lib.mappings.createCell({
    name: `down-${randomUUID().slice(0, 8)}`,
    databaseConnection: `postgres://postgres:down-sentinel-pw@127.0.0.1:${port}/nowhere`,
  });
}

describe('scatterGather', () => {
  it('returns from each of 4 cells a value read from its own database', async () => {
    const widgets = world.lib.getRepository(Widget);
    const results = await world.lib.scatterGatherAll(async () => {
      const [row] = (await widgets.query('SELECT current_database() AS name')) as {
        name: string;
      }[];
      return row!.name;
    });
    expect([...results.keys()].sort()).toEqual(
      mappings()
        .map((m) => m.uuid)
        .sort(),
    );
    for (const c of world.cells) expect(results.get(c.mapping.uuid)).toBe(c.db.name);
  });

  it('runs fn inside targetCell with a copy of the caller context', async () => {
    const results = await runWithContext(new RequestContext({ userId: 'u-scatter' }), () =>
      world.lib.scatterGather(mappings(), async (cell) => {
        const ctx = getContext();
        return `${ctx.userId}:${ctx.cellUuid === cell.uuid}`;
      }),
    );
    expect([...results.values()]).toEqual(mappings().map(() => 'u-scatter:true'));
  });

  it('accepts cell uuids and names each result by its cell uuid in the given order', async () => {
    const uuids = mappings()
      .map((m) => m.uuid.toUpperCase())
      .reverse();
    const results = await world.lib.scatterGather(uuids, async (cell) => cell.name);
    expect([...results.keys()]).toEqual(uuids.map((u) => u.toLowerCase()));
    for (const m of mappings()) expect(results.get(m.uuid)).toBe(m.name);
  });

  it('yields RaisedError with UnknownCellError for an unmapped uuid, the other cells unaffected', async () => {
    const unknown = randomUUID();
    const results = await world.lib.scatterGather(
      [unknown, mappings()[0]!],
      async (cell) => cell.uuid,
    );
    const failure = results.get(unknown);
    expect(failure).toBeInstanceOf(RaisedError);
    expect((failure as RaisedError).error).toBeInstanceOf(UnknownCellError);
    expect(results.get(mappings()[0]!.uuid)).toBe(mappings()[0]!.uuid);
  });

  it('yields DidNotRespond for a hung cell by the deadline, aborting its signal, while the others answer', async () => {
    const widgets = world.lib.getRepository(Widget);
    const hung = mappings()[1]!;
    const signals = new Map<string, AbortSignal>();
    const started = performance.now();
    try {
      const results = await world.lib.scatterGather(
        mappings(),
        async (cell, signal) => {
          signals.set(cell.uuid, signal);
          if (cell.uuid === hung.uuid) await widgets.query('SELECT pg_sleep(10)');
          return widgets.count();
        },
        { timeoutMs: 700 },
      );
      const elapsed = performance.now() - started;
      expect(elapsed).toBeLessThan(700 + 400);
      expect(elapsed).toBeGreaterThanOrEqual(690);
      const verdict = results.get(hung.uuid);
      expect(verdict).toBeInstanceOf(DidNotRespond);
      expect(verdict).toMatchObject({ cellUuid: hung.uuid, cellName: hung.name });
      expect(signals.get(hung.uuid)?.aborted).toBe(true);
      expect((signals.get(hung.uuid)?.reason as Error).name).toBe('TimeoutError');
      for (const m of mappings().filter((x) => x !== hung)) {
        expect(typeof results.get(m.uuid)).toBe('number');
        expect(signals.get(m.uuid)?.aborted).toBe(false);
      }
    } finally {
      await endSleeps();
    }
  });

  it('yields DidNotRespond without running fn for cells still queued at the deadline', async () => {
    const ran: string[] = [];
    const results = await world.lib.scatterGather(
      mappings(),
      async (cell, signal) => {
        ran.push(cell.uuid);
        await new Promise((resolve) => signal.addEventListener('abort', resolve));
        return 'late';
      },
      { timeoutMs: 200, concurrency: 1 },
    );
    expect(ran).toHaveLength(1);
    expect([...results.values()].every((v) => v instanceof DidNotRespond)).toBe(true);
  });

  it('yields RaisedError with CellUnreachableError quickly for a cell whose server is down, masking its password', async () => {
    const widgets = world.lib.getRepository(Widget);
    const down = await downCell();
    try {
      const started = performance.now();
      const results = await world.lib.scatterGather([...mappings(), down], () => widgets.count(), {
        timeoutMs: 10_000,
      });
      expect(performance.now() - started).toBeLessThan(2000);
      const failure = results.get(down.uuid);
      expect(failure).toBeInstanceOf(RaisedError);
      expect((failure as RaisedError).error).toBeInstanceOf(CellUnreachableError);
      expect(failure).toMatchObject({
        cellName: down.name,
        error: { code: 'CELLS_CELL_UNREACHABLE' },
      });
      const shown = `${JSON.stringify(failure)} ${(failure as RaisedError).message} ${String((failure as RaisedError).error)}`;
      expect(shown).not.toContain('down-sentinel-pw');
      for (const m of mappings()) expect(typeof results.get(m.uuid)).toBe('number');
    } finally {
      await world.lib.mappings.deleteCell(down.uuid);
    }
  });

  it('yields RaisedError carrying whatever fn threw, the other cells unaffected', async () => {
    const bad = mappings()[2]!;
    const results = await world.lib.scatterGather(mappings(), async (cell) => {
      if (cell.uuid === bad.uuid) throw new Error('boom in cell');
      return 1;
    });
    expect(isCellFailure(results.get(bad.uuid))).toBe(true);
    expect(((results.get(bad.uuid) as RaisedError).error as Error).message).toBe('boom in cell');
    expect([...results.values()].filter((v) => !isCellFailure(v))).toEqual([1, 1, 1]);
  });

  it('runs at most `concurrency` cells at once', async () => {
    const widgets = world.lib.getRepository(Widget);
    let inFlight = 0;
    let most = 0;
    const results = await world.lib.scatterGather(
      mappings(),
      async () => {
        most = Math.max(most, ++inFlight);
        try {
          await widgets.query('SELECT pg_sleep(0.05)');
          return 'ok';
        } finally {
          inFlight--;
        }
      },
      { concurrency: 2 },
    );
    expect(most).toBe(2);
    expect([...results.values()]).toEqual(['ok', 'ok', 'ok', 'ok']);
  });

  it('takes about as long as the slowest cell, not the sum of all', async () => {
    const widgets = world.lib.getRepository(Widget);
    await world.lib.scatterGather(mappings(), () => widgets.count());
    const started = performance.now();
    const results = await world.lib.scatterGather(mappings(), () =>
      widgets.query('SELECT pg_sleep(0.3)'),
    );
    const elapsed = performance.now() - started;
    expect([...results.values()].some(isCellFailure)).toBe(false);
    expect(elapsed).toBeGreaterThanOrEqual(295);
    expect(elapsed).toBeLessThan(4 * 300 * 0.6);
  });

  it('keeps 50 interleaved scatter-gathers apart, every row written in its own cell', async () => {
    const widgets = world.lib.getRepository(Widget);
    const tag = `sg-${randomUUID()}`;
    const gathers = Array.from({ length: 50 }, (_, i) =>
      world.lib.scatterGather(
        i % 2 === 0 ? mappings() : [...mappings()].reverse(),
        async (cell) => {
          const row = widgetFor(cell.uuid, tag);
          await sleep(Math.random() * 10);
          await widgets.insert(row);
          const back = await widgets.findOneBy({ uuid: row.uuid! });
          return back?.intendedCell === cell.uuid;
        },
        { concurrency: 1 + (i % 4) },
      ),
    );
    const all = await Promise.all(gathers);
    for (const results of all) expect([...results.values()]).toEqual([true, true, true, true]);
    for (const c of world.cells) {
      const rows = await rowsIn<{ intended_cell: string }>(
        c.db.url,
        'SELECT intended_cell FROM widgets WHERE name = $1',
        [tag],
      );
      expect(rows).toHaveLength(50);
      expect(rows.every((r) => r.intended_cell === c.mapping.uuid)).toBe(true);
    }
  });

  it('rejects promptly with ScatterGatherAbortedError when the caller aborts, aborting every cell signal', async () => {
    const widgets = world.lib.getRepository(Widget);
    const controller = new AbortController();
    const signals: AbortSignal[] = [];
    const started = performance.now();
    setTimeout(() => controller.abort(new Error('client went away')), 100);
    try {
      const gather = world.lib.scatterGather(
        mappings(),
        async (_cell, signal) => {
          signals.push(signal);
          return widgets.query('SELECT pg_sleep(5)');
        },
        { signal: controller.signal },
      );
      await expect(gather).rejects.toThrow(ScatterGatherAbortedError);
      await expect(gather).rejects.toMatchObject({
        code: 'CELLS_SCATTER_GATHER_ABORTED',
        cause: { message: 'client went away' },
      });
      expect(performance.now() - started).toBeLessThan(600);
      expect(signals).toHaveLength(4);
      expect(signals.every((s) => s.aborted)).toBe(true);
    } finally {
      await endSleeps();
    }
  });

  it('rejects at once for an already aborted signal without running fn', async () => {
    const fn = jest.fn(async () => 1);
    await expect(
      world.lib.scatterGather(mappings(), fn, { signal: AbortSignal.abort() }),
    ).rejects.toThrow(ScatterGatherAbortedError);
    expect(fn).not.toHaveBeenCalled();
  });

  it('rejects with InvalidArgumentError for a malformed cell uuid or option before running fn', async () => {
    const fn = jest.fn(async () => 1);
    await expect(world.lib.scatterGather(['not-a-uuid'], fn)).rejects.toThrow(InvalidArgumentError);
    await expect(world.lib.scatterGather(mappings(), fn, { timeoutMs: 0 })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(world.lib.scatterGather(mappings(), fn, { concurrency: 1.5 })).rejects.toThrow(
      InvalidArgumentError,
    );
    expect(fn).not.toHaveBeenCalled();
  });
});

describe('scatterGatherAll', () => {
  it('leaves out disabled cells unless asked to include them', async () => {
    const disabled = await world.lib.mappings.createCell({
      name: `disabled-${randomUUID().slice(0, 8)}`,
      databaseConnection: world.cells[0]!.db.url,
      disabled: true,
    });
    try {
      const all = await world.lib.scatterGatherAll(async (cell) => cell.name, { includeDisabled: true });
      const enabled = await world.lib.scatterGatherAll(async (cell) => cell.name);
      expect(all.get(disabled.uuid)).toBe(disabled.name);
      expect(enabled.has(disabled.uuid)).toBe(false);
      expect(enabled.size).toBe(4);
    } finally {
      await world.lib.mappings.deleteCell(disabled.uuid);
    }
  });
});
