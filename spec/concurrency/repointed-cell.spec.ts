import { targetCell, type CellsOptions } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, migrateCellDatabase, widgetFor, type CellWorld } from '../support/cells';
import { countConnections, createTestDatabase, rowsIn, type TestDatabase } from '../support/databases';
import { eventually } from '../support/peers';
import { Widget } from '../support/widget';

// Issue 9, case 9: a cell re-pointed with plain SQL in the API database (no notification). Once a
// refreshed mapping lookup (after the cache TTL) shows another databaseConnection than the open
// DataSource's, that DataSource is retired (running calls finish) and new calls go to the new
// database, also while the cell stays busy. cells.evictCell(uuid) does the same on demand.

const TTL_MS = 200;
let world: CellWorld | undefined;
let newHome: TestDatabase | undefined;
afterEach(async () => {
  await world?.destroy();
  await newHome?.drop();
  world = undefined;
  newHome = undefined;
});

async function repointWorld(label: string, cells: Partial<CellsOptions>): Promise<{ w: CellWorld; home: TestDatabase }> {
  world = await createCellWorld(label, { cellCount: 2, cells });
  newHome = await createTestDatabase(`${label}_new`);
  await migrateCellDatabase(newHome.url);
  return { w: world, home: newHome };
}

/** Points cell `index` at `url` with plain SQL in the API database, as an operator's script would. */
async function repointWithSql(w: CellWorld, index: number, url: string): Promise<void> {
  await rowsIn(w.api.url, 'UPDATE cell_mappings SET database_connection = $1 WHERE uuid = $2', [url, w.cells[index]!.mapping.uuid]);
}

const databaseOf = async (w: CellWorld, index: number) => {
  const [row] = (await targetCell(w.cells[index]!.mapping, () =>
    w.lib.getRepository(Widget).query('SELECT current_database() AS name'),
  )) as Array<{ name: string }>;
  return row!.name;
};

/** Keeps `loops` calls in flight on cell `index` until stopped; collects their failures. */
function keepBusy(w: CellWorld, index: number, loops: number) {
  let stopped = false;
  const failures: string[] = [];
  const widgets = w.lib.getRepository(Widget);
  const running = Array.from({ length: loops }, async () => {
    // Bounded: a loop ends on its own after 20 s, or after a few failures.
    const deadline = Date.now() + 20_000;
    while (!stopped && Date.now() < deadline && failures.length < 5) {
      await targetCell(w.cells[index]!.mapping, () => widgets.query('SELECT pg_sleep(0.02)')).catch((error: unknown) =>
        failures.push(String(error)),
      );
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      return failures;
    },
  };
}

describe('a cell re-pointed with plain SQL', () => {
  it('sends new calls to the new database once the mapping cache TTL has passed, while the cell stays busy', async () => {
    const { w, home } = await repointWorld('conc_repoint_ttl', { mappingCache: { ttlMs: TTL_MS } });
    const old = w.cells[0]!.db;
    expect(await databaseOf(w, 0)).toBe(old.name);
    const busy = keepBusy(w, 0, 2);
    let reached: string;
    try {
      await repointWithSql(w, 0, home.url);
      await sleep(TTL_MS * 1.5);
      await eventually(async () => (await databaseOf(w, 0)) === home.name, 3000).catch(() => undefined);
      reached = await databaseOf(w, 0);
    } finally {
      expect(await busy.stop()).toEqual([]);
    }
    expect(reached).toBe(home.name);
    const row = widgetFor(w.cells[0]!.mapping.uuid, 'after-repoint');
    await targetCell(w.cells[0]!.mapping, () => w.lib.getRepository(Widget).insert(row));
    expect((await rowsIn(home.url, 'SELECT 1 FROM widgets WHERE uuid = $1', [row.uuid])).length).toBe(1);
    expect((await rowsIn(old.url, 'SELECT 1 FROM widgets WHERE uuid = $1', [row.uuid])).length).toBe(0);
    // The old DataSource is retired once its calls are done.
    await eventually(async () => (await countConnections(old.name)) === 0, 5000);
  });

  it('closes the DataSource on evictCell(uuid) after the running calls, and the next call reopens it', async () => {
    const { w } = await repointWorld('conc_repoint_evict', {});
    const mapping = w.cells[1]!.mapping;
    const widgets = w.lib.getRepository(Widget);
    expect(await targetCell(mapping, () => widgets.count())).toBe(0);
    const slow = targetCell(mapping, () => widgets.query('SELECT pg_sleep(0.3), 1 AS done'));
    await sleep(50);
    w.lib.evictCell(mapping.uuid);
    await expect(slow).resolves.toEqual([expect.objectContaining({ done: 1 })]);
    await eventually(async () => (await countConnections(w.cells[1]!.db.name)) === 0, 5000);
    expect(w.lib.stats()).toMatchObject({ evictions: 1, closed: 1 });
    expect(await targetCell(mapping, () => widgets.count())).toBe(0);
    expect(w.lib.stats()).toMatchObject({ opened: 2, open: 1 });
  });

  it('sends the next call to the new database after evictCell(uuid) for a plain-SQL re-point, within the TTL', async () => {
    const { w, home } = await repointWorld('conc_repoint_op', { mappingCache: { ttlMs: 600_000 } });
    expect(await databaseOf(w, 0)).toBe(w.cells[0]!.db.name);
    await repointWithSql(w, 0, home.url);
    w.lib.evictCell(w.cells[0]!.mapping.uuid);
    expect(await databaseOf(w, 0)).toBe(home.name);
  });

  it('moves 200 requests over 2 cells to the new database after the TTL without failing one', async () => {
    const { w, home } = await repointWorld('conc_repoint_many', { mappingCache: { ttlMs: TTL_MS } });
    const widgets = w.lib.getRepository(Widget);
    expect(await databaseOf(w, 0)).toBe(w.cells[0]!.db.name);
    const repointedAt = performance.now() + 300;
    const repointing = sleep(300).then(() => repointWithSql(w, 0, home.url));
    const outcomes = await Promise.allSettled(
      Array.from({ length: 200 }, async (_, i) => {
        await sleep(i * 15);
        const index = i % 2;
        const row = widgetFor(w.cells[index]!.mapping.uuid, `many-${i}`);
        const at = performance.now();
        await targetCell(w.cells[index]!.mapping, () => widgets.insert(row));
        return { index, row, at };
      }),
    );
    await repointing;
    const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
    expect(failed.slice(0, 5)).toEqual([]);
    // Every write to cell 0 that started well after the TTL (plus a second of slack) is in the new database.
    const late = outcomes.flatMap((o) =>
      o.status === 'fulfilled' && o.value.index === 0 && o.value.at > repointedAt + TTL_MS * 1.1 + 1000 ? [o.value.row.uuid] : [],
    );
    expect(late.length).toBeGreaterThan(10);
    const found = await rowsIn<{ uuid: string }>(home.url, 'SELECT uuid FROM widgets WHERE uuid = ANY($1)', [late]);
    expect(found.length).toBe(late.length);
    // Cell 1 was not re-pointed: all its rows are in its own database.
    const cell1 = await rowsIn(w.cells[1]!.db.url, `SELECT 1 FROM widgets WHERE name LIKE 'many-%'`);
    expect(cell1.length).toBe(100);
  });
});
