import { Cells, QueryTimeoutError, RequestContext, runWithContext, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { timed } from '../../dev/wait';
import { eventually } from '../support/peers';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';

/**
 * Per-cell query deadlines (`cellQueryTimeoutMs`) on a server that stops answering (SIGSTOP): a
 * cell with a short deadline fails at its own deadline while a cell on the Cells-wide deadline
 * keeps waiting; a context's deadline wins over the cell's.
 */
const SCENARIO = 'per-cell query deadline';
const CELLS_DEADLINE_MS = 4_000;
const SHORT_MS = 400;
const CALL_MS = 1_200;

let second: SecondServer;
let world: CellWorld;
let lib: Cells;
let short: CellMapping;
let byDefault: CellMapping;
const dbNames = [`cells_dl_short_${process.pid}`, `cells_dl_default_${process.pid}`];

beforeAll(async () => {
  second = await startSecondServer('cells-deadline-pg');
  world = await createCellWorld('deadline', { cellCount: 0 });
  const [shortUrl, defaultUrl] = await Promise.all(dbNames.map((name) => second.createDatabase(name)));
  await migrateCellDatabase(shortUrl!);
  await migrateCellDatabase(defaultUrl!);
  short = await world.lib.mappings.createCell({ name: 'deadline-short', databaseConnection: shortUrl! });
  byDefault = await world.lib.mappings.createCell({ name: 'deadline-default', databaseConnection: defaultUrl! });
  lib = await new Cells({
    api: world.api.url,
    entities: [Widget],
    poolSize: 2,
    connectTimeoutMs: 500,
    queryTimeoutMs: CELLS_DEADLINE_MS,
    // By uuid (in upper case) for the short cell, which its name key does not override.
    cellQueryTimeoutMs: { [short.uuid.toUpperCase()]: SHORT_MS, 'deadline-short': 30_000 },
  }).initialize();
}, 120_000);
afterAll(async () => {
  await second?.resume();
  await lib?.destroy();
  await world?.destroy();
  await second?.remove();
}, 120_000);

const widgets = () => lib.getRepository(Widget);

describe('a per-cell query deadline on a server that stops answering', () => {
  afterEach(async () => {
    await second.resume();
  });

  it('fails the cell with the short deadline at about that deadline, while the other cell waits on', async () => {
    // One open connection each, so every call below runs on an open connection.
    await targetCell(short, () => widgets().count());
    await targetCell(byDefault, () => widgets().count());
    await second.pause();
    let defaultSettled = false;
    const onDefault = timed(targetCell(byDefault, () => widgets().query('SELECT 1 AS one'))).finally(() => (defaultSettled = true));
    const onShort = await timed(targetCell(short, () => widgets().query('SELECT 1 AS one')));
    reportFigure(SCENARIO, `answer time of the cell with ${SHORT_MS} ms (ms)`, Math.round(onShort.ms), `<= ${SHORT_MS * 4}`);
    expect(onShort.error).toBeInstanceOf(QueryTimeoutError);
    expect(onShort.error).toMatchObject({ code: 'CELLS_QUERY_TIMEOUT', timeoutMs: SHORT_MS });
    expect(onShort.ms).toBeGreaterThanOrEqual(SHORT_MS - 5);
    expect(onShort.ms).toBeLessThan(SHORT_MS * 4);
    // The cell on the Cells-wide deadline is still waiting for the paused server...
    expect(defaultSettled).toBe(false);
    await second.resume();
    // ...and answers once it resumes.
    const defaultOutcome = await onDefault;
    expect(defaultOutcome.error).toBeUndefined();
    expect(defaultOutcome.value).toEqual([{ one: 1 }]);
    // The timed-out connection was closed, not left busy: its backend ends, and the cell serves.
    await eventually(async () => (await second.backends(dbNames[0]!)) === 0, 5_000);
    await expect(targetCell(short, () => widgets().count())).resolves.toBe(0);
  }, 60_000);

  it('types a deadline passed through the TypeORM managers a routed repository hands out', async () => {
    await targetCell(short, () => widgets().count());
    await second.pause();
    // repo.manager outside a transaction, and the manager of a transaction.
    const viaManager = await timed(targetCell(short, () => widgets().manager.query('SELECT 1')));
    expect(viaManager.error).toBeInstanceOf(QueryTimeoutError);
    await second.resume();
    await targetCell(short, () => widgets().count());
    let inside: unknown;
    const viaTransaction = await timed(
      targetCell(short, () =>
        lib.transaction(async (manager) => {
          await manager.query('SELECT 1');
          await second.pause();
          try {
            await manager.getRepository(Widget).count();
          } catch (error) {
            inside = error;
            throw error;
          }
        }),
      ),
    );
    expect(inside).toBeInstanceOf(QueryTimeoutError);
    expect(viaTransaction.error).toBeInstanceOf(QueryTimeoutError);
  }, 60_000);

  it("lets a context's deadline override the cell's", async () => {
    await targetCell(short, () => widgets().count());
    await second.pause();
    const ctx = new RequestContext({ cell: short, queryTimeoutMs: CALL_MS });
    const outcome = await timed(runWithContext(ctx, () => widgets().query('SELECT 1')));
    reportFigure(SCENARIO, `answer time with a context deadline of ${CALL_MS} ms (ms)`, Math.round(outcome.ms), `<= ${CALL_MS * 3}`);
    expect(outcome.error).toMatchObject({ code: 'CELLS_QUERY_TIMEOUT', timeoutMs: CALL_MS });
    expect(outcome.ms).toBeGreaterThanOrEqual(CALL_MS - 5);
    expect(outcome.ms).toBeLessThan(CALL_MS * 3);
  }, 60_000);
});
