import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { ObjectLiteral, Repository } from 'typeorm';
import {
  CellDisabledError,
  CellReadOnlyError,
  Cells,
  InvalidArgumentError,
  RaisedError,
  targetCell,
  type CellMapping,
  type CellState,
} from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import {
  apiMigrationSource,
  behavesAs,
  migrateApiBeforeCellStates,
  msUntilSeen,
  runLoad,
  stateChangeFailures,
  stopLoads,
  type CallOutcome,
} from './support/cell-states';
import { createTestDatabase, rowsIn } from './support/databases';
import { startStateWatcher, wallClockMs } from './support/state-watcher';
import { Widget } from './support/widget';
import { reportFigure } from './reliability/figures';
import { sleep } from '../dev/wait';

// Cell states on PostgreSQL cells, changed through `world.lib` (the writer) and seen by `other`, a
// second Cells with its own API pool and LISTEN connection, as a second process has.
let world: CellWorld;
let other: Cells;
let cell: CellMapping;
let calm: CellMapping;
let widgets: Repository<Widget>;
let otherWidgets: Repository<Widget>;

beforeAll(async () => {
  world = await createCellWorld('cstates', { cellCount: 2, cells: { poolSize: 6 } });
  other = new Cells({ api: { url: world.api.url, poolSize: 3 }, poolSize: 6, entities: [Widget] });
  await other.initialize();
  [cell, calm] = world.cells.map((c) => c.mapping) as [CellMapping, CellMapping];
  widgets = world.lib.getRepository(Widget);
  otherWidgets = other.getRepository(Widget);
}, 60_000);

afterAll(async () => {
  await other?.destroy();
  await world?.destroy();
}, 60_000);

afterEach(async () => {
  await setState('active');
});

/** Sets `cell`'s state through the writer and waits until both Cells apply it; returns `other`'s delay (ms). */
async function setState(state: CellState): Promise<number> {
  await world.lib.mappings.setCellState(cell.uuid, state);
  const seen = await msUntilSeen(other, otherWidgets as unknown as Repository<ObjectLiteral>, cell, state);
  // The writer applies it at once: its first call after the write behaves so.
  expect(await behavesAs(world.lib, widgets as unknown as Repository<ObjectLiteral>, cell, state)).toBe(true);
  return seen;
}

async function rowsInCell(): Promise<number> {
  const [row] = await rowsIn<{ n: string }>(world.cells[0]!.db.url, 'SELECT COUNT(*) AS n FROM widgets');
  return Number(row!.n);
}

/** Every routed write a repository, a query builder or a transaction can make, on `repo`'s cell. */
function everyWrite(repo: Repository<Widget>, lib: Cells, existing: string): Array<[string, () => Promise<unknown>]> {
  const qb = () => repo.createQueryBuilder('w');
  return [
    ['save', () => repo.save(repo.create(widgetFor(cell.uuid)))],
    ['insert', () => repo.insert(widgetFor(cell.uuid))],
    ['update', () => repo.update({ uuid: existing }, { name: 'changed' })],
    ['upsert', () => repo.upsert(widgetFor(cell.uuid), ['uuid'])],
    ['delete', () => repo.delete({ uuid: existing })],
    ['softDelete', () => repo.softDelete({ uuid: existing })],
    ['restore', () => repo.restore({ uuid: existing })],
    ['increment', () => repo.increment({ uuid: existing }, 'size', 1)],
    ['decrement', () => repo.decrement({ uuid: existing }, 'size', 1)],
    ['remove', async () => repo.remove(await repo.findOneByOrFail({ uuid: existing }))],
    ['softRemove', async () => repo.softRemove(await repo.findOneByOrFail({ uuid: existing }))],
    ['recover', async () => repo.recover(await repo.findOneByOrFail({ uuid: existing }))],
    ['updateAll', () => repo.updateAll({ name: 'changed' })],
    ['deleteAll', () => repo.deleteAll()],
    ['clear', () => repo.clear()],
    ['insert builder', () => qb().insert().values(widgetFor(cell.uuid)).execute()],
    ['update builder', () => qb().update().set({ name: 'changed' }).where('uuid = :u', { u: existing }).execute()],
    ['delete builder', () => qb().delete().where('uuid = :u', { u: existing }).execute()],
    ['soft-delete builder', () => qb().softDelete().where('uuid = :u', { u: existing }).execute()],
    ['transaction', () => lib.transaction(async () => repo.insert(widgetFor(cell.uuid)))],
    ['nested transaction', () => lib.transaction(() => lib.transaction(async () => repo.save(repo.create(widgetFor(cell.uuid)))))],
  ];
}

describe('a read-only cell', () => {
  it('refuses every routed write of both processes before it reaches the database, and serves reads', async () => {
    const existing = widgetFor(cell.uuid);
    await targetCell(cell, () => widgets.insert(existing));
    await setState('read-only');
    const before = await rowsInCell();
    const results = await Promise.all(
      Array.from({ length: 4 }, () =>
        [world.lib, other].map((lib) => {
          const repo = lib.getRepository(Widget);
          return targetCell(cell, () =>
            Promise.all([
              ...everyWrite(repo, lib, existing.uuid!).map(([what, write]) =>
                write().then(
                  () => ({ what, error: undefined as unknown }),
                  (error: unknown) => ({ what, error }),
                ),
              ),
              repo.count().then((n) => ({ what: 'read', error: n >= 1 ? undefined : new Error('no rows read') })),
              repo.createQueryBuilder('w').getMany().then(() => ({ what: 'read builder', error: undefined as unknown })),
              lib.transaction(() => repo.findOneByOrFail({ uuid: existing.uuid! })).then(() => ({ what: 'read transaction', error: undefined as unknown })),
            ]),
          );
        }),
      ).flat(),
    );
    const outcomes = results.flat();
    const writes = outcomes.filter((o) => !o.what.startsWith('read'));
    expect(writes).toHaveLength(2 * 4 * 21);
    for (const { what, error } of writes) {
      expect({ what, error }).toEqual({ what, error: expect.any(CellReadOnlyError) });
      expect((error as CellReadOnlyError).code).toBe('CELLS_CELL_READ_ONLY');
      expect((error as Error).message).toContain(`'${cell.name}' (${cell.uuid})`);
    }
    for (const read of outcomes.filter((o) => o.what.startsWith('read'))) expect(read).toEqual({ what: read.what, error: undefined });
    expect(await rowsInCell()).toBe(before);
    // Another cell of the same process keeps taking writes.
    await targetCell(calm, () => widgets.insert(widgetFor(calm.uuid)));
  });

  it('runs its connections in read-only transactions: a write the library does not see is refused by the server, typed', async () => {
    await setState('read-only');
    const before = await rowsInCell();
    for (const lib of [world.lib, other]) {
      const repo = lib.getRepository(Widget);
      const [setting] = await targetCell(cell, () => repo.query('SHOW default_transaction_read_only'));
      expect(setting).toEqual({ default_transaction_read_only: 'on' });
      const insert = `INSERT INTO widgets (uuid, name, intended_cell) VALUES ('${randomUUID()}', 'raw', '${cell.uuid}')`;
      const writes: Array<[string, () => Promise<unknown>]> = [
        ['repo.query', () => repo.query(insert)],
        ['repo.query in a transaction', () => lib.transaction(() => repo.query(insert))],
        ['manager.save', () => lib.transaction((m) => m.save(Widget, m.create(Widget, widgetFor(cell.uuid))))],
        ['manager repository insert', () => lib.transaction((m) => m.getRepository(Widget).insert(widgetFor(cell.uuid)))],
        ['manager repository update', () => lib.transaction((m) => m.getRepository(Widget).update({ name: 'x' }, { name: 'y' }))],
        ['manager.query', () => lib.transaction((m) => m.query(insert))],
        ['repo.manager.query', () => repo.manager.query(insert)],
      ];
      for (const [what, write] of writes) {
        const error = await targetCell(cell, write).then(() => undefined, (e: unknown) => e);
        expect({ what, error }).toEqual({ what, error: expect.any(CellReadOnlyError) });
        expect((error as CellReadOnlyError).code).toBe('CELLS_CELL_READ_ONLY');
        expect((error as Error).message).toContain(`'${cell.name}' (${cell.uuid})`);
        expect((error as Error).message).toMatch(/refused by its database/);
        expect(((error as Error).cause as { driverError?: { code?: string } }).driverError?.code).toBe('25006');
      }
    }
    expect(await rowsInCell()).toBe(before);
    await setState('active');
    const [setting] = await targetCell(cell, () => widgets.query('SHOW default_transaction_read_only'));
    expect(setting).toEqual({ default_transaction_read_only: 'off' });
  });

  it("keeps a raw SET of one caller from making the pooled connections writable for later callers", async () => {
    await setState('read-only');
    const before = await rowsInCell();
    for (const sql of ['SET default_transaction_read_only = off', 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE']) {
      await targetCell(cell, () => widgets.query(sql));
      for (let i = 0; i < 8; i++) {
        const insert = `INSERT INTO widgets (uuid, name, intended_cell) VALUES ('${randomUUID()}', 'after-set', '${cell.uuid}')`;
        await expect(targetCell(cell, () => widgets.query(insert))).rejects.toThrow(/read-only transaction/);
      }
    }
    expect(await rowsInCell()).toBe(before);
  });
});

describe('a disabled cell', () => {
  it('refuses reads, writes and transactions of both processes with CellDisabledError', async () => {
    await setState('disabled');
    for (const lib of [world.lib, other]) {
      const repo = lib.getRepository(Widget);
      const calls: Array<() => Promise<unknown>> = [() => repo.count(), () => repo.insert(widgetFor(cell.uuid)), () => lib.transaction(() => repo.count())];
      for (const call of calls) {
        const error = await targetCell(cell, call).then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(CellDisabledError);
        expect((error as CellDisabledError).code).toBe('CELLS_CELL_DISABLED');
        expect((error as Error).message).toContain(`'${cell.name}' (${cell.uuid})`);
      }
    }
    expect(await targetCell(calm, () => widgets.count())).toBeGreaterThanOrEqual(0);
  });

  it('is left out of scatterGatherAll unless asked, and then reported as RaisedError', async () => {
    await setState('disabled');
    for (const lib of [world.lib, other]) {
      const repo = lib.getRepository(Widget);
      const gathered = await lib.scatterGatherAll(() => repo.count());
      expect([...gathered.keys()]).toEqual([calm.uuid]);
      const asked = await lib.scatterGatherAll(() => repo.count(), { includeDisabled: true });
      const result = asked.get(cell.uuid);
      expect(result).toBeInstanceOf(RaisedError);
      expect((result as RaisedError).error).toBeInstanceOf(CellDisabledError);
      expect(typeof asked.get(calm.uuid)).toBe('number');
    }
  });
});

describe('a draining cell', () => {
  it('serves reads and writes, and the mappings show its state', async () => {
    await setState('draining');
    const row = widgetFor(cell.uuid);
    await targetCell(cell, () => otherWidgets.insert(row));
    expect(await targetCell(cell, () => widgets.countBy({ uuid: row.uuid! }))).toBe(1);
    const listed = await other.mappings.allCells();
    expect(listed.find((c) => c.uuid === cell.uuid)).toMatchObject({ state: 'draining', disabled: false });
    expect((await other.mappings.cellByUuid(cell.uuid)).toJSON()).toMatchObject({ state: 'draining' });
  });
});

describe('state changes', () => {
  it('refuses an unknown state with InvalidArgumentError listing the states, changing nothing', async () => {
    const error = await world.lib.mappings.setCellState(cell.uuid, 'paused' as CellState).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as Error).message).toMatch(/'active', 'read-only', 'draining', 'disabled'.*'paused'/);
    await expect(world.lib.mappings.updateCell(cell.uuid, { state: 'disabled', disabled: false })).rejects.toThrow(InvalidArgumentError);
    expect((await world.lib.mappings.cellByUuid(cell.uuid)).state).toBe('active');
  });

  it('keeps the disabled flag of before cell states working: disabled true and false', async () => {
    const updated = await world.lib.mappings.updateCell(cell.uuid, { disabled: true });
    expect(updated).toMatchObject({ state: 'disabled', disabled: true });
    await msUntilSeen(other, otherWidgets as unknown as Repository<ObjectLiteral>, cell, 'disabled');
    expect(await world.lib.mappings.allCells({ includeDisabled: false })).not.toContainEqual(expect.objectContaining({ uuid: cell.uuid }));
    await world.lib.mappings.setCellState(cell.uuid, 'draining');
    // false enables a disabled cell only; another state is kept.
    expect(await world.lib.mappings.updateCell(cell.uuid, { disabled: false })).toMatchObject({ state: 'draining' });
    await world.lib.mappings.setCellState(cell.uuid, 'disabled');
    expect(await world.lib.mappings.updateCell(cell.uuid, { disabled: false })).toMatchObject({ state: 'active' });
  });

  it('reach a second Cells in under 1 s and apply to calls that start after them, under load; running transactions commit', async () => {
    const row = (cellUuid: string) => widgetFor(cellUuid) as ObjectLiteral & { uuid: string };
    const load = (process: string, lib: Cells) =>
      runLoad({ process, lib, repo: lib.getRepository(Widget) as unknown as Repository<ObjectLiteral>, cell, row, writers: 3, readers: 2, transactions: 2, holdMs: 120 });
    const loads = [load('writer', world.lib), load('other', other)];
    const steps: CellState[] = ['read-only', 'active', 'draining', 'disabled', 'active', 'read-only', 'disabled', 'active'];
    // When each state was applied in each process: from it on, every call that starts behaves so.
    const applied: Array<{ state: CellState; asked: number; at: { writer: number; other: number } }> = [];
    const delays: number[] = [];
    await sleep(200);
    for (const state of steps) {
      // The change may apply anywhere between the call and its answer: calls started in between
      // may behave as either state, so the previous state's window ends at the call.
      const asked = performance.now();
      await world.lib.mappings.setCellState(cell.uuid, state);
      const writerAt = performance.now();
      const ms = await msUntilSeen(other, otherWidgets as unknown as Repository<ObjectLiteral>, cell, state);
      delays.push(ms);
      applied.push({ state, asked, at: { writer: writerAt, other: writerAt + ms } });
      await sleep(250);
    }
    const outcomes = await stopLoads(loads);

    const { unexpected, runningFailed } = stateChangeFailures(outcomes);
    expect(unexpected).toEqual([]);
    // A transaction whose first write went through was running at any later change: it commits.
    expect(runningFailed).toEqual([]);
    // Each call that started after a state was applied in its process, and ended before the next
    // change was asked for, behaved as that state says.
    const held = applied.map(() => 0);
    for (const [index, step] of applied.entries()) {
      const next = applied[index + 1];
      for (const o of outcomes) {
        const from = step.at[o.process as 'writer' | 'other'];
        const until = next === undefined ? Infinity : next.asked;
        // A call still running when the next change was asked for may have met either state (its
        // check of the state can come after its start under load): only calls that ended before are
        // held to this state.
        if (o.started < from || o.ended >= until) continue;
        held[index]!++;
        expect({ step: step.state, kind: o.kind, error: o.error }).toEqual({ step: step.state, kind: o.kind, error: expectedError(step.state, o) });
      }
    }
    // Every state was held to account by calls of its own.
    expect(held.filter((n) => n === 0)).toEqual([]);
    // The cell holds exactly the rows whose writes succeeded: no refused write reached it.
    const written = new Set<string>();
    for (const o of outcomes) {
      if (o.error !== undefined) continue;
      if (o.kind === 'write') written.add(o.uuid!);
      if (o.kind === 'transaction') written.add(o.uuid!).add(o.second!);
    }
    const rows = await rowsIn<{ uuid: string }>(world.cells[0]!.db.url, 'SELECT uuid FROM widgets');
    const stored = new Set(rows.map((r) => r.uuid));
    expect([...written].filter((u) => !stored.has(u))).toEqual([]);
    const refusedButStored = outcomes.filter((o) => o.error !== undefined && o.kind !== 'read' && stored.has(o.uuid!));
    expect(refusedButStored).toEqual([]);
    const spanning = outcomes.filter((o) => o.kind === 'transaction' && o.running === true && applied.some((a) => a.at.writer > o.started && a.at.writer < o.ended));
    expect(spanning.length).toBeGreaterThan(0);
    const max = Math.max(...delays);
    const scenario = 'cell states (PostgreSQL API, LISTEN/NOTIFY)';
    reportFigure(scenario, 'ms until a second Cells applies a state change, max of 8', Math.round(max), '< 1000');
    reportFigure(scenario, 'calls under load (2 Cells)', outcomes.length, 'informational');
    reportFigure(scenario, 'writes and transactions refused typed', outcomes.filter((o) => o.kind !== 'read' && o.error !== undefined).length, 'informational');
    reportFigure(scenario, 'transactions running across a change, failed', runningFailed.length, `must be 0 (of ${spanning.length})`);
    reportFigure(scenario, 'refused writes found in the cell', refusedButStored.length, 'must be 0');
    expect(max).toBeLessThan(1000);
  }, 60_000);
});

describe('a second OS process', () => {
  it('applies each state change in under 1 s (the built library, its own API connections and listener)', async () => {
    const watcher = await startStateWatcher(world.api.url, cell.uuid);
    try {
      const delays: number[] = [];
      for (const state of ['read-only', 'active', 'disabled', 'active', 'read-only', 'active'] as CellState[]) {
        const started = wallClockMs();
        const seen = watcher.seen(state);
        await world.lib.mappings.setCellState(cell.uuid, state);
        delays.push((await seen) - started);
      }
      const max = Math.max(...delays);
      reportFigure('cell states (PostgreSQL API, LISTEN/NOTIFY)', 'ms from setCellState to a call of a second process behaving so, max of 6', Math.round(max), '< 1000');
      expect(max).toBeLessThan(1000);
    } finally {
      await watcher.stop();
    }
  }, 30_000);
});

/** The error a call started while `state` applied must end with. */
function expectedError(state: CellState, o: CallOutcome): unknown {
  if (state === 'disabled') return expect.any(CellDisabledError);
  if (state === 'read-only' && o.kind !== 'read') return expect.any(CellReadOnlyError);
  return undefined;
}

describe('the CellStates migration on PostgreSQL', () => {
  it('converts disabled true to disabled and false to active, and back', async () => {
    const db = await createTestDatabase('cstates_mig');
    try {
      await migrateApiBeforeCellStates({ type: 'postgres', url: db.url });
      const [off, on] = [randomUUID(), randomUUID()];
      await rowsIn(
        db.url,
        `INSERT INTO cell_mappings (uuid, name, database_connection, disabled) VALUES ($1, 'a-off', 'postgres://h/a', true), ($2, 'b-on', 'postgres://h/b', false)`,
        [off, on],
      );
      const ds = apiMigrationSource({ type: 'postgres', url: db.url });
      await ds.initialize();
      try {
        expect((await ds.runMigrations()).map((m) => m.name)).toEqual(['CellStates1768000000000']);
        expect(await rowsIn(db.url, 'SELECT uuid, state FROM cell_mappings ORDER BY name')).toEqual([
          { uuid: off, state: 'disabled' },
          { uuid: on, state: 'active' },
        ]);
        await expect(rowsIn(db.url, `UPDATE cell_mappings SET state = 'paused'`)).rejects.toThrow(/ck_cell_mappings_state/);
        await rowsIn(db.url, `UPDATE cell_mappings SET state = 'read-only' WHERE uuid = $1`, [on]);
        await ds.undoLastMigration();
        expect(await rowsIn(db.url, 'SELECT uuid, disabled FROM cell_mappings ORDER BY name')).toEqual([
          { uuid: off, disabled: true },
          { uuid: on, disabled: false },
        ]);
      } finally {
        await ds.destroy();
      }
    } finally {
      await db.drop();
    }
  });
});
