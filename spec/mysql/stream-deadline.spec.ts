import type { Readable } from 'node:stream';
import {
  CellUnreachableError,
  CellsError,
  QueryTimeoutError,
  targetCell,
  type CellMapping,
} from '../../lib';
import { sleep, withTimeout } from '../../dev/wait';
import { startForwarder, type Forwarder } from '../support/forwarder';
import { createMixedFleet, Gadget, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql, mysqlQuery, mysqlServerUrl } from '../support/mysql';

/**
 * The query deadline holds for routed streams on MariaDB cells as on PostgreSQL ones
 * (spec/reliability/stream-deadline.spec.ts): each wait of a stream on the server (its first row, each
 * next row while the consumer reads, its end) is bounded; a statement that runs past it, or a network
 * that stops forwarding mid-stream, fails the stream with a typed error, and the connection is closed
 * rather than left to the next call. The time a consumer spends between rows is its own.
 */
const DEADLINE_MS = 800;
const SLACK_MS = 1_000;
// Enough rows (about 25 MB) that the socket buffers cannot hold the whole result when the network stalls.
const ROWS = 100_000;

/** The outcome of reading `stream` to its end: rows read, and the error it failed with, if any. */
async function drain(
  stream: Readable,
  onRow?: (rows: number) => Promise<void> | void,
): Promise<{ rows: number; error?: unknown }> {
  let rows = 0;
  try {
    for await (const _row of stream) {
      rows += 1;
      await onRow?.(rows);
    }
  } catch (error) {
    return { rows, error };
  }
  return { rows };
}

describeMysql('a routed stream on a MariaDB cell', () => {
  let fleet: MixedFleet;
  let forwarder: Forwarder;
  /** A cell reached directly. */
  const direct = (): CellMapping => fleet.mariadb[0]!.mapping;
  /** A cell reached through `forwarder`. */
  const forwarded = (): CellMapping => fleet.mariadb[1]!.mapping;
  const gadgets = () => fleet.lib.getRepository(Gadget);
  const streamOf = (cell: CellMapping): Promise<Readable> =>
    targetCell(cell, () =>
      gadgets().createQueryBuilder('g').select(['g.uuid', 'g.name']).orderBy('g.size').stream(),
    ) as Promise<Readable>;

  beforeAll(async () => {
    forwarder = await startForwarder(mysqlServerUrl()!);
    fleet = await createMixedFleet('my_stream_dl', {
      pgCells: 0,
      mariadbCells: 2,
      cells: { poolSize: 2, queryTimeoutMs: DEADLINE_MS, shutdownTimeoutMs: 1_000 },
      mariadbUrl: (url, index) => (index === 1 ? forwarder.url(url) : url),
    });
    for (const { db } of fleet.mariadb) {
      await mysqlQuery(
        `INSERT INTO \`${db.name}\`.gadgets (uuid, name, intended_cell, size)
         SELECT UUID(), CONCAT(REPEAT('x', 200), seq), 'x', seq FROM \`${db.name}\`.seq_1_to_${ROWS}`,
      );
    }
  }, 120_000);
  afterEach(() => {
    forwarder.flow();
  });
  afterAll(async () => {
    forwarder?.flow();
    await fleet?.destroy();
    await forwarder?.close();
  }, 60_000);

  it('fails a statement that runs past the deadline (SLEEP) with QueryTimeoutError within the deadline and slack', async () => {
    const started = performance.now();
    const stream = (await targetCell(direct(), () =>
      gadgets().createQueryBuilder('g').select('SLEEP(4)', 'slept').limit(1).stream(),
    )) as Readable;
    const { rows, error } = await drain(stream);
    const took = performance.now() - started;
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect(error).toMatchObject({ code: 'CELLS_QUERY_TIMEOUT', timeoutMs: DEADLINE_MS });
    expect(rows).toBe(0);
    expect(took).toBeLessThan(DEADLINE_MS + SLACK_MS);
  }, 20_000);

  it('fails a stream whose network stops forwarding mid-stream with a typed error within the deadline and slack', async () => {
    const stream = await streamOf(forwarded());
    let stalledAt = 0;
    const { rows, error } = await withTimeout(
      drain(stream, (read) => {
        if (read !== 1) return;
        // The consumer holds the first rows while the network stops; its next reads then wait.
        forwarder.stall();
        stalledAt = performance.now();
      }),
      20_000,
      'the stalled stream',
    );
    const took = performance.now() - stalledAt;
    expect(error).toBeInstanceOf(QueryTimeoutError);
    expect((error as CellsError).message).toContain(forwarded().uuid);
    expect(rows).toBeLessThan(ROWS);
    expect(took).toBeLessThan(DEADLINE_MS + SLACK_MS);
  }, 30_000);

  it('fails a stream whose connection is lost mid-stream with CellUnreachableError, without waiting for the deadline', async () => {
    const stream = await streamOf(forwarded());
    let cutAt = 0;
    const { rows, error } = await withTimeout(
      drain(stream, async (read) => {
        if (read !== 1) return;
        await forwarder.cut();
        cutAt = performance.now();
      }),
      20_000,
      'the stream on a lost connection',
    );
    const took = performance.now() - cutAt;
    await forwarder.restore();
    expect(error).toBeInstanceOf(CellUnreachableError);
    expect((error as CellsError).message).toContain(forwarded().uuid);
    expect(rows).toBeLessThan(ROWS);
    expect(took).toBeLessThan(DEADLINE_MS);
    await expect(targetCell(forwarded(), () => gadgets().count())).resolves.toBe(ROWS);
  }, 30_000);

  it('lets a slow consumer read every row: the deadline bounds the server, not the consumer', async () => {
    const stream = await streamOf(direct());
    const { rows, error } = await drain(stream, async (read) => {
      // Three times the deadline between the first rows, on a server that answers.
      if (read <= 3) await sleep(DEADLINE_MS * 3);
    });
    expect(error).toBeUndefined();
    expect(rows).toBe(ROWS);
  }, 60_000);

  it('serves the next call on a cell whose stream passed its deadline', async () => {
    const stream = await streamOf(forwarded());
    const { error } = await withTimeout(
      drain(stream, (read) => {
        if (read === 1) forwarder.stall();
      }),
      20_000,
      'the stalled stream',
    );
    expect(error).toBeInstanceOf(QueryTimeoutError);
    forwarder.flow();
    await expect(targetCell(forwarded(), () => gadgets().count())).resolves.toBe(ROWS);
  }, 30_000);

  it('closes every cell on destroy() after streams passed their deadline', async () => {
    const stalled = await streamOf(forwarded());
    const { error } = await withTimeout(
      drain(stalled, (read) => {
        if (read === 1) forwarder.stall();
      }),
      20_000,
      'the stalled stream',
    );
    expect(error).toBeInstanceOf(QueryTimeoutError);
    await withTimeout(fleet.lib.destroy(), 10_000, 'destroy()');
    expect(fleet.lib.stats()).toMatchObject({ open: 0, draining: 0 });
  }, 40_000);
});
