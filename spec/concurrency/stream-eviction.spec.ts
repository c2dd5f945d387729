import type { Readable } from 'node:stream';
import { targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, type CellWorld } from '../support/cells';
import { countConnections, rowsIn } from '../support/databases';
import { eventually } from '../support/peers';
import { Widget } from '../support/widget';

// Issue 9, case 5: a routed query-builder stream holds its cell's lease until it ends, errors or is
// destroyed. Eviction (maxOpenCells) and the idle sweep (idleTimeoutMs) wait for it, so a stream
// read slowly while its cell is pushed out still delivers every row and 'end'.
// TypeORM streams need the pg-query-stream package.

const STALL_MS = 5000;
let world: CellWorld | undefined;
afterEach(async () => {
  await world?.destroy();
  world = undefined;
});

/** Inserts `count` widgets in cell `index` with plain SQL. */
async function seedRows(w: CellWorld, index: number, count: number): Promise<void> {
  const { db, mapping } = w.cells[index]!;
  await rowsIn(
    db.url,
    `INSERT INTO widgets (uuid, name, intended_cell)
     SELECT gen_random_uuid(), 'streamed-' || n, $1 FROM generate_series(1, $2) AS n`,
    [mapping.uuid, count],
  );
}

/** What reading a stream to its end gave: the rows seen, and how it finished. */
interface Drained {
  rows: number;
  finish: 'end' | 'error' | 'stalled';
  error?: string;
}

/**
 * Reads `stream` slowly: pauses `pauseMs` after every `every` rows, calling `onPause` at each pause.
 * Resolves once it ends or errors, or once no row came for STALL_MS (a stream that silently stops).
 */
function drainSlowly(stream: Readable, every: number, pauseMs: number, onPause: (rows: number) => void = () => undefined): Promise<Drained> {
  return new Promise((resolve) => {
    let rows = 0;
    let watchdog: NodeJS.Timeout;
    const finish = (result: Drained) => {
      clearTimeout(watchdog);
      resolve(result);
    };
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => finish({ rows, finish: 'stalled' }), STALL_MS);
    };
    arm();
    stream.on('data', () => {
      rows++;
      arm();
      if (rows % every === 0) {
        stream.pause();
        onPause(rows);
        setTimeout(() => stream.resume(), pauseMs);
      }
    });
    stream.on('end', () => finish({ rows, finish: 'end' }));
    stream.on('error', (error: Error) => finish({ rows, finish: 'error', error: error.message }));
  });
}

function streamOf(w: CellWorld, mapping: CellMapping): Promise<Readable> {
  return targetCell(mapping, () =>
    w.lib.getRepository(Widget).createQueryBuilder('w').select('w.uuid').orderBy('w.uuid').stream(),
  ) as Promise<Readable>;
}

describe('a routed stream', () => {
  it('delivers all 20,000 rows and ends while maxOpenCells 1 pushes its cell out', async () => {
    world = await createCellWorld('conc_stream_lru', { cellCount: 2, cells: { maxOpenCells: 1 } });
    const w = world;
    await seedRows(w, 0, 20_000);
    const stream = await streamOf(w, w.cells[0]!.mapping);
    let other: Promise<number> | undefined;
    const drained = await drainSlowly(stream, 1000, 40, (rows) => {
      // Another cell's call needs the only slot: the LRU wants the streaming cell out.
      if (rows === 1000) other = targetCell(w.cells[1]!.mapping, () => w.lib.getRepository(Widget).count());
    });
    expect(drained).toEqual({ rows: 20_000, finish: 'end' });
    await expect(other).resolves.toBe(0);
  });

  it('delivers all 20,000 rows and ends while the idle timeout passes many times', async () => {
    world = await createCellWorld('conc_stream_idle', { cellCount: 1, cells: { idleTimeoutMs: 40 } });
    await seedRows(world, 0, 20_000);
    const stream = await streamOf(world, world.cells[0]!.mapping);
    const drained = await drainSlowly(stream, 1000, 60);
    expect(drained).toEqual({ rows: 20_000, finish: 'end' });
  });

  it('gives back its connection once destroyed midway, so the idle cell closes', async () => {
    world = await createCellWorld('conc_stream_destroy', { cellCount: 1, cells: { idleTimeoutMs: 40 } });
    const w = world;
    await seedRows(w, 0, 20_000);
    const stream = await streamOf(w, w.cells[0]!.mapping);
    const drained = drainSlowly(stream, 500, 20, (rows) => {
      if (rows === 2000) stream.destroy();
    });
    await sleep(100);
    await eventually(async () => (await countConnections(w.cells[0]!.db.name)) === 0, 5000);
    expect((await drained).rows).toBeLessThan(20_000);
    expect(w.lib.stats()).toMatchObject({ open: 0, closed: 1 });
  });

  it('delivers every row of 6 slow streams over 3 cells while 60 other calls churn maxOpenCells 2', async () => {
    world = await createCellWorld('conc_stream_many', { cellCount: 3, cells: { maxOpenCells: 2, idleTimeoutMs: 50 } });
    const w = world;
    for (let i = 0; i < 3; i++) await seedRows(w, i, 5_000);
    const streams = Array.from({ length: 6 }, async (_, k) => {
      const stream = await streamOf(w, w.cells[k % 3]!.mapping);
      return drainSlowly(stream, 500, 15 + k * 5);
    });
    const calls = Array.from({ length: 60 }, async (_, i) => {
      await sleep(i * 10);
      return targetCell(w.cells[i % 3]!.mapping, () => w.lib.getRepository(Widget).count());
    });
    const drained = await Promise.all(streams);
    expect(drained).toEqual(Array(6).fill({ rows: 5_000, finish: 'end' }));
    expect(await Promise.all(calls)).toEqual(Array(60).fill(5_000));
  });
});
