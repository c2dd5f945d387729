import {
  CellBusyError,
  CellUnreachableError,
  CellsError,
  DidNotRespond,
  RaisedError,
  targetCell,
  type CellMapping,
  type CellsOptions,
} from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { timed } from '../../dev/wait';
import { adminQuery } from '../support/databases';
import { closedPort, eventually } from '../support/peers';
import { Widget } from '../support/widget';

// Issue 9, case 6: a healthy cell whose pool is fully in use is busy, not unreachable. The wait for a
// free pooled connection has its own bound, `acquireTimeoutMs`, and its own error, CellBusyError
// (CELLS_CELL_BUSY, naming the cell and the pool size); the connect timeout does not bound it;
// inside a scatter-gather the gather's deadline bounds it, and a busy cell is never reported as
// unreachable.

const POOL_SIZE = 2;
let world: CellWorld | undefined;
afterEach(async () => {
  await world?.destroy();
  world = undefined;
});

async function busyWorld(label: string, options: Partial<CellsOptions>): Promise<CellWorld> {
  world = await createCellWorld(label, { cellCount: 2, cells: { poolSize: POOL_SIZE, ...options } });
  return world;
}

/**
 * Fills the pool of `mapping` with `POOL_SIZE` sleeps of `seconds` and resolves once the server runs
 * them all; the returned promise of the sleeps settles when they end.
 */
async function fillPool(w: CellWorld, index: number, seconds: number): Promise<{ done: Promise<unknown> }> {
  const { mapping, db } = w.cells[index]!;
  const widgets = w.lib.getRepository(Widget);
  const done = Promise.allSettled(
    Array.from({ length: POOL_SIZE }, () => targetCell(mapping, () => widgets.query('SELECT pg_sleep($1)', [seconds]))),
  );
  await eventually(async () => {
    const [row] = await adminQuery<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'`,
      [db.name],
    );
    return row?.n === POOL_SIZE;
  }, 5000);
  return { done };
}

const codeOf = (error: unknown) => (error as { code?: unknown } | undefined)?.code;
const count = (w: CellWorld, mapping: CellMapping) => targetCell(mapping, () => w.lib.getRepository(Widget).count());

describe('a busy pool', () => {
  it('exports CellBusyError, a CellsError with code CELLS_CELL_BUSY', () => {
    expect(typeof CellBusyError).toBe('function');
    expect(Object.create(CellBusyError.prototype)).toBeInstanceOf(CellsError);
  });

  it('fails a call queued behind a full pool with CellBusyError once acquireTimeoutMs passes', async () => {
    const w = await busyWorld('conc_busy_fail', { connectTimeoutMs: 5000, acquireTimeoutMs: 400 });
    const mapping = w.cells[0]!.mapping;
    const { done } = await fillPool(w, 0, 3);
    const outcome = await timed(count(w, mapping));
    expect(codeOf(outcome.error)).toBe('CELLS_CELL_BUSY');
    expect(outcome.error).toBeInstanceOf(CellBusyError);
    expect(outcome.error).not.toBeInstanceOf(CellUnreachableError);
    const message = (outcome.error as Error).message;
    expect(message).toContain(mapping.name);
    expect(message).toMatch(new RegExp(`\\b${POOL_SIZE}\\b`));
    expect(message).not.toContain('postgres://');
    expect(outcome.ms).toBeGreaterThanOrEqual(300);
    expect(outcome.ms).toBeLessThan(2500);
    await done;
  });

  it('lets a call wait for a free connection longer than connectTimeoutMs while acquireTimeoutMs allows', async () => {
    const w = await busyWorld('conc_busy_wait', { connectTimeoutMs: 300, acquireTimeoutMs: 10_000 });
    const { done } = await fillPool(w, 0, 1);
    const outcome = await timed(count(w, w.cells[0]!.mapping));
    expect(outcome.error).toBeUndefined();
    expect(outcome.value).toBe(0);
    await done;
  });

  it('never reports a busy cell as unreachable in a scatter-gather', async () => {
    const w = await busyWorld('conc_busy_gather', { connectTimeoutMs: 300, acquireTimeoutMs: 10_000 });
    const { done } = await fillPool(w, 0, 2.5);
    const widgets = w.lib.getRepository(Widget);
    const results = await w.lib.scatterGather(
      w.cells.map((c) => c.mapping),
      () => widgets.count(),
      { timeoutMs: 1000 },
    );
    const busy = results.get(w.cells[0]!.mapping.uuid);
    const busyIsBusy =
      busy instanceof DidNotRespond || (busy instanceof RaisedError && codeOf(busy.error) === 'CELLS_CELL_BUSY');
    expect({ busyIsBusy, busy }).toEqual({ busyIsBusy: true, busy });
    expect(results.get(w.cells[1]!.mapping.uuid)).toBe(0);
    await done;
  });

  it("bounds a busy cell's wait for a connection inside a scatter-gather by the gather's timeoutMs", async () => {
    const w = await busyWorld('conc_busy_deadline', { connectTimeoutMs: 10_000, acquireTimeoutMs: 10_000 });
    const mapping = w.cells[0]!.mapping;
    const { done } = await fillPool(w, 0, 3);
    const widgets = w.lib.getRepository(Widget);
    let call: Promise<{ ms: number; error?: unknown }> | undefined;
    const started = performance.now();
    const results = await w.lib.scatterGather([mapping], () => {
      call = timed(widgets.count());
      return call;
    }, { timeoutMs: 500 });
    const result = results.get(mapping.uuid);
    const busyOrLate =
      result instanceof DidNotRespond || (result instanceof RaisedError && codeOf(result.error) === 'CELLS_CELL_BUSY');
    expect({ busyOrLate, result }).toEqual({ busyOrLate: true, result });
    expect(performance.now() - started).toBeLessThan(1500);
    // The queued call itself gives up by the deadline instead of waiting for the sleeps (3 s).
    const outcome = await call!;
    expect(outcome.error).toBeDefined();
    expect(outcome.ms).toBeLessThan(1500);
    await done;
  });

  it("names the cell once in CellUnreachableError's message, without a doubled 'cell'", async () => {
    world = await createCellWorld('conc_busy_msg', { cellCount: 0 });
    const port = await closedPort();
    const down = await world.lib.mappings.createCell({
      name: 'down-cell',
      databaseConnection: `postgres://postgres:pw@127.0.0.1:${port}/nowhere`,
    });
    const outcome = await timed(count(world, down));
    expect(outcome.error).toBeInstanceOf(CellUnreachableError);
    expect((outcome.error as Error).message).toContain('down-cell');
    expect((outcome.error as Error).message).not.toMatch(/\bcell cell\b/i);
  });

  it('serves 300 concurrent calls through a pool of 2 although they wait longer than connectTimeoutMs', async () => {
    const w = await busyWorld('conc_busy_burst', { connectTimeoutMs: 200, acquireTimeoutMs: 30_000 });
    const widgets = w.lib.getRepository(Widget);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 300 }, () => targetCell(w.cells[0]!.mapping, () => widgets.query('SELECT pg_sleep(0.005)'))),
    );
    const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
    expect([failed.length, ...new Set(failed)]).toEqual([0]);
  });

  it('fails only with CellBusyError, never CellUnreachableError, when 120 calls overrun acquireTimeoutMs', async () => {
    const w = await busyWorld('conc_busy_overrun', { connectTimeoutMs: 2000, acquireTimeoutMs: 300 });
    const widgets = w.lib.getRepository(Widget);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 120 }, () => targetCell(w.cells[0]!.mapping, () => widgets.query('SELECT pg_sleep(0.05)'))),
    );
    const codes = outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : String(codeOf(o.reason) ?? o.reason)));
    expect(codes).toContain('ok');
    expect([...new Set(codes)].sort()).toEqual(['CELLS_CELL_BUSY', 'ok']);
    // The other cell, healthy and idle, is unaffected.
    await expect(count(w, w.cells[1]!.mapping)).resolves.toBe(0);
  });
});
