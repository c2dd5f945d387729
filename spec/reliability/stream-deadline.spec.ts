import type { Readable } from 'node:stream';
import { once } from 'node:events';
import { Cells, QueryTimeoutError, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { eventually } from '../support/peers';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from '../../dev/wait';

/**
 * The query deadline holds for routed streams too: each wait of a stream on the server (a batch of
 * rows, the cursor's close) is bounded, on a server that stops answering (SIGSTOP) mid-stream; the
 * time a consumer spends between batches is its own.
 */
const SCENARIO = 'stream deadline';
const DEADLINE_MS = 500;
const ROWS = 5_000;

let second: SecondServer;
let world: CellWorld;
let lib: Cells;
let cell: CellMapping;
const dbName = `cells_stream_dl_${process.pid}`;

beforeAll(async () => {
  second = await startSecondServer('cells-stream-deadline-pg');
  world = await createCellWorld('stream_deadline', { cellCount: 0 });
  const url = await second.createDatabase(dbName);
  await migrateCellDatabase(url);
  await rowsIn(
    url,
    `INSERT INTO widgets (uuid, name, intended_cell)
     SELECT gen_random_uuid(), 'streamed-' || n, 'x' FROM generate_series(1, $1) AS n`,
    [ROWS],
  );
  cell = await world.lib.mappings.createCell({ name: 'stream-deadline', databaseConnection: url });
  lib = await new Cells({
    api: world.api.url,
    entities: [Widget],
    poolSize: 2,
    connectTimeoutMs: 500,
    queryTimeoutMs: DEADLINE_MS,
  }).initialize();
}, 120_000);
afterAll(async () => {
  await second?.resume();
  await lib?.destroy();
  await world?.destroy();
  await second?.remove();
}, 120_000);
afterEach(async () => {
  await second.resume();
});

const streamOf = (): Promise<Readable> =>
  targetCell(cell, () =>
    lib.getRepository(Widget).createQueryBuilder('w').select('w.uuid').orderBy('w.name').stream(),
  ) as Promise<Readable>;

describe('a routed stream on a server that stops answering', () => {
  it('fails with QueryTimeoutError at about the deadline, and its connection is closed', async () => {
    const stream = await streamOf();
    const closed = new Promise((resolve) => stream.once('close', resolve));
    let rows = 0;
    let started = 0;
    let error: unknown;
    try {
      for await (const _row of stream) {
        rows += 1;
        if (rows === 1) {
          // The consumer holds the first batch while the server stops; its next read then waits.
          await second.pause();
          started = performance.now();
        }
      }
    } catch (caught) {
      error = caught;
    }
    const ms = performance.now() - started;
    reportFigure(SCENARIO, 'time from the pause to the typed error (ms)', Math.round(ms), `<= ${DEADLINE_MS * 4}`);
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect(error).toMatchObject({ code: 'CELLS_QUERY_TIMEOUT', timeoutMs: DEADLINE_MS });
    expect(rows).toBeLessThan(ROWS);
    expect(ms).toBeLessThan(DEADLINE_MS * 4);
    await closed;
    await second.resume();
    // The connection was closed, not left busy: its backend ends, and the cell serves again.
    await eventually(async () => (await second.backends(dbName)) === 0, 5_000);
    await expect(targetCell(cell, () => lib.getRepository(Widget).count())).resolves.toBe(ROWS);
  }, 60_000);

  it('closes at about the deadline when its consumer destroys it while the server is stopped', async () => {
    const stream = await streamOf();
    const [first] = (await once(stream, 'data')) as unknown[];
    expect(first).toBeDefined();
    stream.pause();
    await second.pause();
    const started = performance.now();
    const closed = new Promise((resolve) => stream.once('close', resolve)).then(() => 'closed' as const);
    stream.destroy();
    const outcome = await Promise.race([closed, sleep(DEADLINE_MS * 6).then(() => 'still open' as const)]);
    const ms = performance.now() - started;
    reportFigure(SCENARIO, 'time for a destroyed stream to close on a stopped server (ms)', Math.round(ms), `<= ${DEADLINE_MS * 6}`);
    expect(outcome).toBe('closed');
    await second.resume();
    await expect(targetCell(cell, () => lib.getRepository(Widget).count())).resolves.toBe(ROWS);
  }, 60_000);

  it('lets a slow consumer read every row: the deadline bounds the server, not the consumer', async () => {
    const stream = await streamOf();
    let rows = 0;
    for await (const _row of stream) {
      rows += 1;
      // Twice the deadline between the first batches, on a server that answers.
      if (rows % 100 === 1 && rows < 400) await sleep(DEADLINE_MS * 2);
    }
    expect(rows).toBe(ROWS);
  }, 60_000);
});
