import { randomUUID } from 'node:crypto';
import { CellMapping, CellUnreachableError, UnknownCellError, targetCell, type CellsLogEvent } from '../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from './support/cells';
import { adminQuery, countConnections, createTestDatabase, testDatabaseUrl } from './support/databases';
import { Widget } from './support/widget';
import { eventually, sleep } from '../dev/wait';

describe('DataSource registry', () => {
  let world: CellWorld;
  afterEach(async () => {
    await world?.destroy();
  });

  it('opens exactly one DataSource for 100 concurrent first calls to a cell', async () => {
    world = await createCellWorld('reg_sf', { cellCount: 1 });
    const widgets = world.lib.getRepository(Widget);
    const target = world.cells[0]!.mapping;
    const counts = await Promise.all(Array.from({ length: 100 }, () => targetCell(target, () => widgets.count())));
    expect(counts.every((n) => n === 0)).toBe(true);
    const stats = world.lib.stats();
    expect(stats.opened).toBe(1);
    expect(stats.open).toBe(1);
    expect(stats.misses + stats.hits).toBe(100);
    expect(await countConnections(world.cells[0]!.db.name)).toBeLessThanOrEqual(3);
  });

  it('does not cache a failed open: the next call retries and succeeds', async () => {
    world = await createCellWorld('reg_retry', { cellCount: 0 });
    const name = `cells_reg_late_${process.pid}_${randomUUID().slice(0, 8)}`;
    const mapping = await world.lib.mappings.createCell({ name: 'late', databaseConnection: testDatabaseUrl(name) });
    const widgets = world.lib.getRepository(Widget);
    const first = targetCell(mapping, () => widgets.count());
    await expect(first).rejects.toThrow(CellUnreachableError);
    await expect(first).rejects.toThrow(/late/);
    expect(world.lib.stats()).toMatchObject({ open: 0, failedOpens: 1 });
    await adminQuery(`CREATE DATABASE ${name}`);
    try {
      await migrateCellDatabase(testDatabaseUrl(name));
      expect(await targetCell(mapping, () => widgets.count())).toBe(0);
      expect(world.lib.stats()).toMatchObject({ open: 1, opened: 1 });
    } finally {
      await world.destroy();
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    }
  });

  it('throws UnknownCellError for a cell uuid with no mapping', async () => {
    world = await createCellWorld('reg_unknown', { cellCount: 0 });
    const widgets = world.lib.getRepository(Widget);
    const missing = randomUUID();
    await expect(targetCell(missing, () => widgets.count())).rejects.toThrow(UnknownCellError);
    await expect(targetCell(missing, () => widgets.count())).rejects.toThrow(missing);
  });

  it('fails no query when eviction hits a cell with queries in flight', async () => {
    const events: CellsLogEvent[] = [];
    world = await createCellWorld('reg_evict', { cellCount: 4, cells: { maxOpenCells: 2, logger: (e) => events.push(e) } });
    const widgets = world.lib.getRepository(Widget);
    let peak = 0;
    let peakConnections = 0;
    const names = world.cells.map((c) => c.db.name);
    const sampler = setInterval(() => {
      void adminQuery<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = ANY($1)', [names]).then(
        ([row]) => (peakConnections = Math.max(peakConnections, Number(row!.n))),
      );
    }, 10);
    const tasks = Array.from({ length: 120 }, (_, i) =>
      targetCell(world.cells[i % 4]!.mapping, async () => {
        const [row] = await widgets.query('SELECT current_database() AS db, pg_sleep($1::float / 1000)', [i % 3 === 0 ? 60 : 5]);
        const s = world.lib.stats();
        peak = Math.max(peak, s.open + s.draining + s.opening);
        return (row as { db: string }).db;
      }),
    );
    const dbs = await Promise.all(tasks).finally(() => clearInterval(sampler));
    expect(dbs).toEqual(Array.from({ length: 120 }, (_, i) => world.cells[i % 4]!.db.name));
    expect(world.lib.stats().evictions).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(2);
    // maxOpenCells 2 x poolSize 3.
    expect(peakConnections).toBeGreaterThan(0);
    expect(peakConnections).toBeLessThanOrEqual(6);
    expect(events.some((e) => e.type === 'evict')).toBe(true);
  });

  it('closes a cell DataSource after the idle timeout, and reopens it on the next call', async () => {
    world = await createCellWorld('reg_idle', { cellCount: 1, cells: { idleTimeoutMs: 150 } });
    const widgets = world.lib.getRepository(Widget);
    const target = world.cells[0]!;
    await targetCell(target.mapping, () => widgets.count());
    expect(world.lib.stats().open).toBe(1);
    await eventually(() => world.lib.stats().closed === 1, 5000);
    expect(world.lib.stats().open).toBe(0);
    await eventually(async () => (await countConnections(target.db.name)) === 0, 5000);
    expect(await targetCell(target.mapping, () => widgets.count())).toBe(0);
    expect(world.lib.stats().opened).toBe(2);
  });

  it('keeps a DataSource open past its idle timeout while a transaction runs on it', async () => {
    world = await createCellWorld('reg_idle_tx', { cellCount: 1, cells: { idleTimeoutMs: 100 } });
    const widgets = world.lib.getRepository(Widget);
    const target = world.cells[0]!.mapping;
    await targetCell(target, () =>
      world.lib.transaction(async () => {
        await sleep(400);
        expect(await widgets.count()).toBe(0);
      }),
    );
    await eventually(() => world.lib.stats().closed === 1, 5000);
  });

  it('leaves no server connection behind after destroy()', async () => {
    world = await createCellWorld('reg_destroy', { cellCount: 3 });
    const widgets = world.lib.getRepository(Widget);
    await Promise.all(world.cells.map((c) => targetCell(c.mapping, () => widgets.count())));
    const inFlight = targetCell(world.cells[0]!.mapping, () => widgets.query('SELECT pg_sleep(0.2)'));
    await sleep(20);
    await world.lib.destroy();
    await expect(inFlight).resolves.toBeDefined();
    for (const db of [world.api, ...world.cells.map((c) => c.db)]) {
      expect(await countConnections(db.name)).toBe(0);
    }
    await expect(targetCell(world.cells[0]!.mapping, () => widgets.count())).rejects.toMatchObject({ code: 'CELLS_NOT_READY' });
  });

  it('lets a mapping read through the API repository without any context', async () => {
    world = await createCellWorld('reg_api', { cellCount: 2 });
    const names = (await world.lib.getRepository(CellMapping, 'api').find()).map((c) => c.name).sort();
    expect(names).toEqual(['reg_api-cell0', 'reg_api-cell1']);
  });
});

describe('a test database factory', () => {
  it('creates databases that exist on the server', async () => {
    const db = await createTestDatabase('reg_factory');
    try {
      expect(await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [db.name])).toHaveLength(1);
    } finally {
      await db.drop();
    }
  });
});
