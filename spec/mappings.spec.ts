import { randomUUID } from 'node:crypto';
import {
  CellInUseError,
  Cells,
  DuplicateMappingError,
  InvalidArgumentError,
  UnknownCellError,
  UnknownHostError,
  UnknownInstanceError,
  targetCell,
  type CellMapping,
} from '../lib';
import { createCellWorld, migrateCellDatabase, widgetFor, type CellWorld } from './support/cells';
import { adminQuery, createTestDatabase, rowsIn, type TestDatabase } from './support/databases';
import { QueryCounter, eventually, openPeer } from './support/peers';
import { Widget } from './support/widget';
import { sleep } from '../dev/wait';

let world: CellWorld;
const peers: Cells[] = [];
const spareDbs: TestDatabase[] = [];

beforeAll(async () => {
  world = await createCellWorld('maps', {
    cellCount: 3,
    cells: { mappingCache: { ttlMs: 600_000 } },
  });
});
afterAll(async () => {
  await Promise.all(peers.map((p) => p.destroy()));
  await world?.destroy();
  await Promise.all(spareDbs.map((db) => db.drop()));
});

function cell(i: number): CellMapping {
  return world.cells[i]!.mapping;
}

/** Another process on the same API database, with a 10-minute TTL so only notifications can refresh it. */
async function peer(counter?: QueryCounter): Promise<Cells> {
  const p = await openPeer(world, {
    mappingCache: { ttlMs: 600_000 },
    ...(counter ? { counter } : {}),
  });
  peers.push(p);
  return p;
}

function newCell(name = `extra-${randomUUID().slice(0, 8)}`) {
  return world.lib.mappings.createCell({ name, databaseConnection: world.cells[0]!.db.url });
}

function mapInstance(target: CellMapping | null, lib: Cells = world.lib) {
  const instanceUuid = randomUUID();
  return lib.mappings
    .mapInstance({ instanceUuid, cell: target, projectId: 'p1' })
    .then(() => instanceUuid);
}

describe('cell mappings', () => {
  it('finds a created cell by uuid, by name and in the list of all cells', async () => {
    const created = await newCell();
    expect((await world.lib.mappings.cellByUuid(created.uuid)).name).toBe(created.name);
    expect((await world.lib.mappings.cellByName(created.name)).uuid).toBe(created.uuid);
    expect((await world.lib.mappings.cell(created.name)).uuid).toBe(created.uuid);
    expect((await world.lib.mappings.allCells()).map((c) => c.uuid)).toContain(created.uuid);
  });

  it('refuses a second cell with a taken name with DuplicateMappingError', async () => {
    const created = await newCell();
    await expect(newCell(created.name)).rejects.toThrow(DuplicateMappingError);
    await expect(newCell(created.name)).rejects.toMatchObject({ code: 'CELLS_DUPLICATE_MAPPING' });
  });

  it('refuses to rename a cell to a taken name without changing the cached cell', async () => {
    const a = await newCell();
    const b = await newCell();
    await world.lib.mappings.cellByUuid(b.uuid);
    await expect(world.lib.mappings.updateCell(b.uuid, { name: a.name })).rejects.toThrow(
      DuplicateMappingError,
    );
    expect((await world.lib.mappings.cellByUuid(b.uuid)).name).toBe(b.name);
  });

  it('refuses to delete a cell while instances are mapped to it, with CellInUseError', async () => {
    const target = await newCell();
    await mapInstance(target);
    await expect(world.lib.mappings.deleteCell(target.uuid)).rejects.toThrow(CellInUseError);
    await expect(world.lib.mappings.deleteCell(target.uuid)).rejects.toMatchObject({
      code: 'CELLS_CELL_IN_USE',
    });
    expect((await world.lib.mappings.cellByUuid(target.uuid)).uuid).toBe(target.uuid);
  });

  it('deletes a cell and its instance mappings when forced, forgetting the cached lookups', async () => {
    const target = await newCell();
    const instance = await mapInstance(target);
    expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(target.uuid);
    await world.lib.mappings.deleteCell(target.name, { force: true });
    await expect(world.lib.mappings.cellByUuid(target.uuid)).rejects.toThrow(UnknownCellError);
    await expect(world.lib.mappings.instanceCell(instance)).rejects.toThrow(UnknownInstanceError);
  });

  it('updates and deletes a cell given as a CellMapping, as targetCell and moveInstance take it', async () => {
    const target = await newCell();
    const renamed = await world.lib.mappings.updateCell(target, { name: `${target.name}-renamed` });
    expect(renamed).toMatchObject({ uuid: target.uuid, name: `${target.name}-renamed` });
    const deleted = await world.lib.mappings.deleteCell(renamed);
    expect(deleted.uuid).toBe(target.uuid);
    await expect(world.lib.mappings.cellByUuid(target.uuid)).rejects.toThrow(UnknownCellError);
  });

  it("connects with a URL's application_name, which the server shows", async () => {
    const url = new URL(world.cells[0]!.db.url);
    const appName = `cells-app-${process.pid}`;
    url.searchParams.set('application_name', appName);
    const target = await world.lib.mappings.createCell({ name: `appname-${process.pid}`, databaseConnection: url.toString() });
    const names = await targetCell(target, () =>
      world.lib.getRepository(Widget).query('SELECT application_name AS name FROM pg_stat_activity WHERE pid = pg_backend_pid()'),
    );
    expect(names).toEqual([{ name: appName }]);
  });

  it('throws UnknownCellError for an unknown uuid or name', async () => {
    await expect(world.lib.mappings.cellByUuid(randomUUID())).rejects.toMatchObject({
      code: 'CELLS_UNKNOWN_CELL',
    });
    await expect(world.lib.mappings.cell('no-such-cell')).rejects.toThrow(UnknownCellError);
  });

  it('follows an instance as it is mapped, moved and unmapped', async () => {
    const instance = await mapInstance(cell(0));
    expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(cell(0).uuid);
    await world.lib.mappings.moveInstance(instance, cell(1));
    expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(cell(1).uuid);
    expect(await world.lib.mappings.unmapInstance(instance)).toBe(true);
    await expect(world.lib.mappings.instanceCell(instance)).rejects.toThrow(UnknownInstanceError);
  });

  it('throws UnknownInstanceError for an instance not placed in a cell yet', async () => {
    const instance = await mapInstance(null);
    await expect(world.lib.mappings.instanceCell(instance)).rejects.toThrow(
      /not placed in a cell yet/,
    );
  });

  it('follows a host as it is mapped, moved and unmapped', async () => {
    const host = `host-${randomUUID()}`;
    await world.lib.mappings.mapHost(host, cell(0));
    expect((await world.lib.mappings.hostCell(host)).uuid).toBe(cell(0).uuid);
    await world.lib.mappings.mapHost(host, cell(2));
    expect((await world.lib.mappings.hostCell(host)).uuid).toBe(cell(2).uuid);
    expect(await world.lib.mappings.unmapHost(host)).toBe(true);
    await expect(world.lib.mappings.hostCell(host)).rejects.toThrow(UnknownHostError);
  });

  it('returns copies, so changing a returned cell changes no later lookup', async () => {
    const first = await world.lib.mappings.cellByUuid(cell(0).uuid);
    first.databaseConnection = 'postgres://nobody@example.invalid/none';
    first.name = 'changed';
    const again = await world.lib.mappings.cellByUuid(cell(0).uuid);
    expect(again.name).toBe(cell(0).name);
    expect(again.databaseConnection).toBe(cell(0).databaseConnection);
  });

  it('rejects a mapping cache bound below one entry with InvalidArgumentError', () => {
    expect(
      () => new Cells({ api: world.api.url, entities: [Widget], mappingCache: { max: 0 } }),
    ).toThrow(InvalidArgumentError);
  });
});

describe('mapping cache', () => {
  it('answers repeated lookups of a mapped instance with no API-database query', async () => {
    const counter = new QueryCounter();
    const p = await peer(counter);
    // Written by the peer itself, so no notification of it can arrive during the first lookup.
    const instance = await mapInstance(cell(1), p);
    expect((await p.mappings.instanceCell(instance)).uuid).toBe(cell(1).uuid);
    const before = counter.count();
    const cells = await Promise.all(
      Array.from({ length: 200 }, () => p.mappings.instanceCell(instance)),
    );
    expect(new Set(cells.map((c) => c.uuid))).toEqual(new Set([cell(1).uuid]));
    expect(counter.count()).toBe(before);
    expect(p.mappings.cacheStats()).toMatchObject({ hits: expect.any(Number), listening: true });
    expect(p.mappings.cacheStats().hits).toBeGreaterThanOrEqual(400);
  });

  it('answers repeated cell, host and list lookups with no API-database query', async () => {
    const counter = new QueryCounter();
    const p = await peer(counter);
    const host = `host-${randomUUID()}`;
    await p.mappings.mapHost(host, cell(2));
    const warm = () =>
      Promise.all([
        p.mappings.cellByUuid(cell(0).uuid),
        p.mappings.cellByName(cell(1).name),
        p.mappings.hostCell(host),
        p.mappings.allCells({ includeDisabled: false }),
      ]);
    await warm();
    const before = counter.count();
    for (let i = 0; i < 20; i++) await warm();
    expect(counter.count()).toBe(before);
  });

  it('runs one query for 100 concurrent misses of one instance', async () => {
    const counter = new QueryCounter();
    const p = await peer(counter);
    const instance = await mapInstance(cell(2), p);
    const before = counter.count(/instance_mappings/);
    const cells = await Promise.all(
      Array.from({ length: 100 }, () => p.mappings.instanceCell(instance)),
    );
    expect(cells.every((c) => c.uuid === cell(2).uuid)).toBe(true);
    expect(counter.count(/instance_mappings/) - before).toBe(1);
  });

  it('runs one query for 100 concurrent misses of an unknown instance, failing them all', async () => {
    const counter = new QueryCounter();
    const p = await peer(counter);
    const unknown = randomUUID();
    const countBefore = counter.count(/instance_mappings/);
    const same = await Promise.allSettled(
      Array.from({ length: 100 }, () => p.mappings.instanceCell(unknown)),
    );
    expect(
      same.every((r) => r.status === 'rejected' && r.reason instanceof UnknownInstanceError),
    ).toBe(true);
    expect(counter.count(/instance_mappings/) - countBefore).toBe(1);
  });

  it('does not cache an unknown instance: its new mapping is seen at once', async () => {
    const instance = randomUUID();
    await expect(world.lib.mappings.instanceCell(instance)).rejects.toThrow(UnknownInstanceError);
    await world.lib.mappings.mapInstance({
      instanceUuid: instance,
      cell: cell(0),
      projectId: 'p1',
    });
    expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(cell(0).uuid);
  });

  it('sees its own rename at once under both names', async () => {
    const target = await newCell();
    await world.lib.mappings.cellByName(target.name);
    const renamed = `${target.name}-renamed`;
    await world.lib.mappings.updateCell(target.uuid, { name: renamed });
    expect((await world.lib.mappings.cellByName(renamed)).uuid).toBe(target.uuid);
    await expect(world.lib.mappings.cellByName(target.name)).rejects.toThrow(UnknownCellError);
    expect((await world.lib.mappings.cellByUuid(target.uuid)).name).toBe(renamed);
  });

  it('never returns a cell older than the last completed move, with lookups and moves interleaved', async () => {
    const instances = await Promise.all(
      Array.from({ length: 20 }, (_, i) => mapInstance(cell(i % 3))),
    );
    const expected = new Map(instances.map((id, i) => [id, cell(i % 3).uuid]));
    const stale: string[] = [];
    await Promise.all(
      instances.flatMap((id, i) => [
        (async () => {
          for (let round = 1; round <= 3; round++) {
            const to = cell((i + round) % 3);
            await world.lib.mappings.moveInstance(id, to);
            expected.set(id, to.uuid);
            const seen = await world.lib.mappings.instanceCell(id);
            if (seen.uuid !== to.uuid) stale.push(id);
          }
        })(),
        ...Array.from({ length: 10 }, async () => {
          await sleep(Math.random() * 20);
          await world.lib.mappings.instanceCell(id);
        }),
      ]),
    );
    expect(stale).toEqual([]);
    for (const [id, uuid] of expected)
      expect((await world.lib.mappings.instanceCell(id)).uuid).toBe(uuid);
  });
});

describe('cache invalidation across processes', () => {
  it('shows a cell created in one process to another within 2 s, despite a 10-minute TTL', async () => {
    const p = await peer();
    await p.mappings.allCells();
    const created = await newCell();
    await eventually(async () =>
      (await p.mappings.allCells()).some((c) => c.uuid === created.uuid),
    );
  });

  it('shows an instance moved in one process to another within 2 s', async () => {
    const p = await peer();
    const instance = await mapInstance(cell(0));
    expect((await p.mappings.instanceCell(instance)).uuid).toBe(cell(0).uuid);
    await world.lib.mappings.moveInstance(instance, cell(2));
    await eventually(async () => (await p.mappings.instanceCell(instance)).uuid === cell(2).uuid);
  });

  it('shows a cell deleted in one process to another within 2 s', async () => {
    const p = await peer();
    const target = await newCell();
    await p.mappings.cellByName(target.name);
    await world.lib.mappings.deleteCell(target.uuid);
    await eventually(() =>
      p.mappings.cellByName(target.name).then(
        () => false,
        (e: unknown) => e instanceof UnknownCellError,
      ),
    );
  });

  it('reopens a cell at its new database in another process after its connection changed', async () => {
    const p = await peer();
    const other = await createTestDatabase('maps_moved');
    spareDbs.push(other);
    await migrateCellDatabase(other.url);
    const marker = widgetFor('moved');
    await rowsIn(other.url, 'INSERT INTO widgets (uuid, name, intended_cell) VALUES ($1, $2, $3)', [
      marker.uuid,
      marker.name,
      'moved',
    ]);
    const target = await newCell();
    const widgets = p.getRepository(Widget);
    const find = () => targetCell(target, () => widgets.findOneBy({ uuid: marker.uuid! }));
    expect(await find()).toBeNull();
    await world.lib.mappings.updateCell(target.uuid, { databaseConnection: other.url });
    await eventually(async () => (await find()) !== null);
  });

  it('re-listens after its connection is terminated, and invalidates again', async () => {
    const p = await peer();
    await eventually(() => p.mappings.cacheStats().listening);
    await adminQuery(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'typeorm-cells mapping listener'`,
      [world.api.name],
    );
    await eventually(
      () => p.mappings.cacheStats().reconnects >= 1 && p.mappings.cacheStats().listening,
      5000,
    );
    const instance = await mapInstance(cell(0));
    expect((await p.mappings.instanceCell(instance)).uuid).toBe(cell(0).uuid);
    await world.lib.mappings.moveInstance(instance, cell(1));
    await eventually(async () => (await p.mappings.instanceCell(instance)).uuid === cell(1).uuid);
  });

  it('forgets every cached lookup when its listener connection drops', async () => {
    const p = await peer();
    await p.mappings.allCells();
    await p.mappings.instanceCell(await mapInstance(cell(0), p));
    expect(p.mappings.cacheStats().size).toBeGreaterThan(0);
    const reconnects = p.mappings.cacheStats().reconnects;
    await adminQuery(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'typeorm-cells mapping listener'`,
      [world.api.name],
    );
    await eventually(() => p.mappings.cacheStats().reconnects > reconnects, 5000);
    expect(p.mappings.cacheStats().size).toBe(0);
  });

  it('closes its listener connection on destroy()', async () => {
    const count = async () =>
      (
        await adminQuery<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'typeorm-cells mapping listener'`,
          [world.api.name],
        )
      )[0]!.n;
    await eventually(async () => (await count()) === 1 + peers.length);
    const p = await openPeer(world);
    await eventually(async () => (await count()) === 2 + peers.length);
    await p.destroy();
    await eventually(async () => (await count()) === 1 + peers.length);
  });
});

describe('targetInstanceCell', () => {
  it('runs each of 90 interleaved calls in the cell of its instance', async () => {
    const instances = await Promise.all(
      Array.from({ length: 90 }, (_, i) => mapInstance(cell(i % 3))),
    );
    const widgets = world.lib.getRepository(Widget);
    const tag = `tic-${randomUUID()}`;
    await Promise.all(
      instances.map((id) =>
        world.lib.targetInstanceCell(id, async (target) => {
          await sleep(Math.random() * 10);
          await widgets.insert(widgetFor(target.uuid, tag));
        }),
      ),
    );
    for (const x of world.cells) {
      const rows = await rowsIn<{ intended_cell: string }>(
        x.db.url,
        'SELECT intended_cell FROM widgets WHERE name = $1',
        [tag],
      );
      expect(rows).toHaveLength(30);
      expect(rows.every((r) => r.intended_cell === x.mapping.uuid)).toBe(true);
    }
  });

  it('throws UnknownInstanceError for an unmapped instance without running fn', async () => {
    const fn = jest.fn();
    await expect(world.lib.targetInstanceCell(randomUUID(), fn)).rejects.toMatchObject({
      code: 'CELLS_UNKNOWN_INSTANCE',
    });
    expect(fn).not.toHaveBeenCalled();
  });
});
