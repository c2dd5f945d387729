import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { UnknownInstanceError, type CellMapping } from '../lib';
import { eventually, sleep, timed } from '../dev/wait';
import { createCellWorld, type CellWorld } from './support/cells';
import { adminQuery, rowsIn } from './support/databases';
import { QueryCounter } from './support/peers';

/**
 * Stale-while-revalidate in the mapping cache: a lookup past its time to live is answered from the
 * cache while it is refreshed in the background, so no request waits for the API database once
 * warm, and a wave of expiries takes at most two API connections.
 */

const TTL_MS = 300;

let world: CellWorld;
const apiQueries = new QueryCounter();

beforeAll(async () => {
  world = await createCellWorld('swr', {
    cellCount: 3,
    cells: { mappingCache: { ttlMs: TTL_MS } },
    apiOptions: { logging: ['query'], logger: apiQueries },
  });
  await eventually(() => world.lib.mappings.cacheStats().listening);
});
afterAll(async () => {
  await world?.destroy();
});

function cell(i: number): CellMapping {
  return world.cells[i]!.mapping;
}

async function mapInstances(count: number): Promise<Map<string, string>> {
  const placed = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const instanceUuid = randomUUID();
    const target = cell(i % 3);
    await world.lib.mappings.mapInstance({ instanceUuid, cell: target, projectId: 'p1' });
    placed.set(instanceUuid, target.uuid);
  }
  return placed;
}

async function lookUpAll(placed: Map<string, string>): Promise<void> {
  await Promise.all(
    [...placed].map(async ([instance, cellUuid]) => {
      expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(cellUuid);
    }),
  );
}

/** Backends of the API database waiting for a lock, besides `holder`. */
async function lockWaiters(): Promise<number> {
  const rows = await adminQuery<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`,
    [world.api.name],
  );
  return rows[0]!.n;
}

describe('mapping cache: stale-while-revalidate', () => {
  it('answers lookups past their TTL at once while the API database cannot answer, with two refreshes at a time', async () => {
    const placed = await mapInstances(30);
    await lookUpAll(placed);
    await sleep(TTL_MS + 50);
    // Every instance mapping is now past its time to live; the API table is locked, so any query
    // for an instance mapping waits until the lock is released.
    const holder = new Client({ connectionString: world.api.url });
    holder.on('error', () => undefined);
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE instance_mappings IN ACCESS EXCLUSIVE MODE');
      const before = world.lib.mappings.cacheStats();
      const lookups = Promise.all(Array.from({ length: 4 }, () => lookUpAll(placed)));
      const { ms, error } = await timed(
        Promise.race([
          lookups,
          sleep(2_000).then(() =>
            Promise.reject(new Error('lookups waited for the locked API database')),
          ),
        ]),
      );
      expect(error).toBeUndefined();
      expect(ms).toBeLessThan(1_000);
      const after = world.lib.mappings.cacheStats();
      expect(after.misses - before.misses).toBe(0);
      expect(after.staleHits - before.staleHits).toBeGreaterThanOrEqual(placed.size);
      // The refreshes wait for the lock, two at a time: the rest of the API pool stays free.
      await eventually(async () => (await lockWaiters()) === 2);
      await sleep(100);
      expect(await lockWaiters()).toBe(2);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
    // Once the API database answers, every stale mapping is refreshed and served fresh again.
    await eventually(() => world.lib.mappings.cacheStats().refreshes >= placed.size, 5_000);
    const settled = world.lib.mappings.cacheStats();
    await lookUpAll(placed);
    const fresh = world.lib.mappings.cacheStats();
    expect(fresh.misses - settled.misses).toBe(0);
  });

  it('serves interleaved lookups across many expiries with no miss on their path and no wrong cell', async () => {
    const placed = await mapInstances(45);
    await lookUpAll(placed);
    const before = world.lib.mappings.cacheStats();
    const instances = [...placed.keys()];
    const until = Date.now() + TTL_MS * 5;
    let answered = 0;
    await Promise.all(
      Array.from({ length: 8 }, async (_, worker) => {
        for (let i = worker; Date.now() < until; i += 7) {
          const instance = instances[i % instances.length]!;
          expect((await world.lib.mappings.instanceCell(instance)).uuid).toBe(placed.get(instance));
          answered++;
          if (i % 5 === 0) await sleep(1);
        }
      }),
    );
    const after = world.lib.mappings.cacheStats();
    expect(answered).toBeGreaterThan(1_000);
    expect(after.misses - before.misses).toBe(0);
    expect(after.refreshes - before.refreshes).toBeGreaterThan(placed.size);
  });

  it('refreshes a wave of expired instance lookups in batches: a few queries, not one per instance', async () => {
    const placed = await mapInstances(150);
    await lookUpAll(placed);
    await sleep(TTL_MS + 50);
    const queriesBefore = apiQueries.count(/instance_mappings/);
    const before = world.lib.mappings.cacheStats();
    await lookUpAll(placed);
    await eventually(() => world.lib.mappings.cacheStats().refreshes - before.refreshes >= placed.size, 5_000);
    const instanceQueries = apiQueries.count(/instance_mappings/) - queriesBefore;
    // Two refreshes start at once (one key each); the rest queue and go in batches of up to 100.
    expect(instanceQueries).toBeLessThanOrEqual(5);
    expect(instanceQueries).toBeGreaterThanOrEqual(1);
    const settled = world.lib.mappings.cacheStats();
    await lookUpAll(placed);
    expect(world.lib.mappings.cacheStats().misses - settled.misses).toBe(0);
  });

  it('sees an instance moved with plain SQL within the TTL and one refresh', async () => {
    const placed = await mapInstances(1);
    const [instance] = [...placed.keys()];
    expect((await world.lib.mappings.instanceCell(instance!)).uuid).toBe(cell(0).uuid);
    await rowsIn(
      world.api.url,
      `UPDATE instance_mappings SET cell_id = (SELECT id FROM cell_mappings WHERE uuid = $1) WHERE instance_uuid = $2`,
      [cell(1).uuid, instance],
    );
    const moved = Date.now();
    await eventually(
      async () => (await world.lib.mappings.instanceCell(instance!)).uuid === cell(1).uuid,
      3_000,
    );
    // Without the refresh it would never be seen: plain SQL sends no notification.
    expect(Date.now() - moved).toBeLessThan(TTL_MS + 1_500);
  });

  it('drops a value whose refresh failed: an instance deleted with plain SQL becomes UnknownInstanceError', async () => {
    const placed = await mapInstances(1);
    const [instance] = [...placed.keys()];
    await world.lib.mappings.instanceCell(instance!);
    await rowsIn(world.api.url, 'DELETE FROM instance_mappings WHERE instance_uuid = $1', [
      instance,
    ]);
    await eventually(
      () =>
        world.lib.mappings.instanceCell(instance!).then(
          () => false,
          (error: unknown) => error instanceof UnknownInstanceError,
        ),
      3_000,
    );
  });
});
