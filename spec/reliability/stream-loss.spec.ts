import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { CellUnreachableError, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { adminQuery, asRole, countConnections, createRole, rowsIn } from '../support/databases';
import { eventually } from '../support/peers';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from '../../dev/wait';

/**
 * A backend lost while a consumer reads a routed stream (failover, `pg_terminate_backend`, a
 * server restart): the consumer gets the same typed error as any other call, with no password in
 * it, and the stream's lease and connection are given back.
 */
const SCENARIO = 'stream loss';
const ROWS = 40_000;
const SENTINEL = `Str3am-${randomBytes(6).toString('hex')}`;
const ROLE = `cells_stream_${process.pid}`;

let world: CellWorld;

beforeAll(async () => {
  const roleUrl = await createRole(ROLE, SENTINEL);
  world = await createCellWorld('stream_loss', {
    cellCount: 2,
    connectionUrl: asRole(roleUrl, SENTINEL),
  });
  for (const { db, mapping } of world.cells) {
    await rowsIn(
      db.url,
      `INSERT INTO widgets (uuid, name, intended_cell)
       SELECT gen_random_uuid(), 'streamed-' || n, $1 FROM generate_series(1, $2) AS n`,
      [mapping.uuid, ROWS],
    );
  }
}, 120_000);
afterAll(async () => {
  await world?.destroy();
  await adminQuery(`DROP ROLE IF EXISTS "${ROLE}"`);
}, 60_000);

const streamOf = (mapping: CellMapping): Promise<Readable> =>
  targetCell(mapping, () =>
    world.lib.getRepository(Widget).createQueryBuilder('w').select('w.uuid').orderBy('w.name').stream(),
  ) as Promise<Readable>;

/**
 * Terminates, from a separate admin connection, the backends of database `name` (only those
 * running the stream's statement with `streamOnly`).
 */
async function terminateBackends(name: string, streamOnly = false): Promise<number> {
  const rows = await adminQuery<{ terminated: boolean }>(
    `SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
      WHERE datname = $1 AND pid <> pg_backend_pid() AND ($2::boolean IS FALSE OR query LIKE '%ORDER BY "w"."name"%')`,
    [name, streamOnly],
  );
  return rows.filter((row) => row.terminated).length;
}

/** Reads `stream` with `for await`, calling `onRow` after each row; resolves with what ended it. */
async function consume(stream: Readable, onRow: (rows: number) => void): Promise<{ rows: number; error?: unknown }> {
  let rows = 0;
  try {
    for await (const row of stream) {
      void row;
      rows++;
      onRow(rows);
      if (rows % 500 === 0) await sleep(5);
    }
    return { rows };
  } catch (error) {
    return { rows, error };
  }
}

function expectTypedWithoutPassword(error: unknown, mapping: CellMapping): void {
  expect(error).toBeInstanceOf(CellUnreachableError);
  expect(error).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
  const shown = [String(error), (error as Error).stack, inspect(error, { depth: Infinity, showHidden: true }), JSON.stringify(error)].join('\n');
  expect(shown).toContain(mapping.uuid);
  expect(shown).not.toContain(SENTINEL);
}

describe('a routed stream whose backend is terminated while it is read', () => {
  it('fails with CellUnreachableError, without the password, and releases its lease and connection', async () => {
    const [lost, healthy] = world.cells;
    let terminated: Promise<number> | undefined;
    const [onLost, onHealthy] = await Promise.all([
      streamOf(lost!.mapping).then((stream) =>
        consume(stream, (rows) => {
          if (rows === 2_000) terminated = terminateBackends(lost!.db.name);
        }),
      ),
      streamOf(healthy!.mapping).then((stream) => consume(stream, () => undefined)),
    ]);
    expect(await terminated).toBeGreaterThan(0);
    reportFigure(SCENARIO, 'rows read before the typed error', onLost.rows, `< ${ROWS}`);
    expect(onLost.rows).toBeLessThan(ROWS);
    expectTypedWithoutPassword(onLost.error, lost!.mapping);
    // The other cell's stream, read at the same time, is untouched.
    expect(onHealthy).toEqual({ rows: ROWS });
    // The lease was released: an evicted DataSource closes once its leases end.
    const closedBefore = world.lib.stats().closed;
    world.lib.evictCell(lost!.mapping.uuid);
    await eventually(() => world.lib.stats().closed > closedBefore && world.lib.stats().draining === 0, 5_000);
    expect(await countConnections(lost!.db.name)).toBe(0);
    // The cell serves again.
    await expect(targetCell(lost!.mapping, () => world.lib.getRepository(Widget).count())).resolves.toBe(ROWS);
  }, 60_000);

  it("reports the loss through the stream's 'error' event as well, and gives no lost connection to a later call", async () => {
    const [lost] = world.cells;
    const repo = world.lib.getRepository(Widget);
    // Warm the pool so the stream and the later calls share it.
    await targetCell(lost!.mapping, () => Promise.all([repo.count(), repo.count(), repo.count()]));
    const stream = await streamOf(lost!.mapping);
    let terminated: Promise<number> | undefined;
    const error = await new Promise<unknown>((resolve) => {
      let rows = 0;
      stream.on('data', () => {
        if (++rows === 1_000) terminated = terminateBackends(lost!.db.name, true);
      });
      stream.on('error', resolve);
      stream.on('end', () => resolve(undefined));
    });
    expect(await terminated).toBe(1);
    expectTypedWithoutPassword(error, lost!.mapping);
    // The stream's connection left the pool; the others serve every call.
    const counts = await targetCell(lost!.mapping, () => Promise.all([repo.count(), repo.count(), repo.count(), repo.count()]));
    expect(counts).toEqual([ROWS, ROWS, ROWS, ROWS]);
  }, 60_000);
});
