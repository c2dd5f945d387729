import { CellUnreachableError, targetCell } from '../../lib';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { sleep } from '../../dev/wait';
import { adminQuery, rowsIn } from '../support/databases';
import { Widget } from '../support/widget';

/**
 * A cell database that stops taking connections (`ALTER DATABASE ... ALLOW_CONNECTIONS false`,
 * PostgreSQL's 55000 "is not currently accepting connections") while its DataSource is open: every
 * routed path (a read, a write, a transaction) reports CellUnreachableError, never the raw driver
 * error (the example app answers 503 to it, not 500).
 */

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('refusing', { cellCount: 1, cells: { poolSize: 2 } });
});
afterAll(async () => {
  const db = world?.cells[0]?.db.name;
  if (db !== undefined) await adminQuery(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
  await world?.destroy();
});

it('reports reads, writes and transactions on a database refusing connections as CellUnreachableError', async () => {
  const cell = world.cells[0]!;
  const widgets = world.lib.getRepository(Widget);
  await targetCell(cell.mapping, () => widgets.count());
  await adminQuery(`ALTER DATABASE "${cell.db.name}" ALLOW_CONNECTIONS false`);
  await adminQuery('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [cell.db.name]);
  const outcomes = await Promise.allSettled([
    targetCell(cell.mapping, () => widgets.count()),
    targetCell(cell.mapping, () => widgets.save(widgetFor(cell.mapping.uuid))),
    targetCell(cell.mapping, () => world.lib.transaction(() => widgets.save(widgetFor(cell.mapping.uuid)))),
    targetCell(cell.mapping, () => widgets.find({ take: 1 })),
  ]);
  for (const outcome of outcomes) {
    expect(outcome.status).toBe('rejected');
    expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(CellUnreachableError);
  }
});

it('reports a cell server refusing a new connection of an open pool (too many connections) as CellUnreachableError', async () => {
  const cell = world.cells[0]!;
  await adminQuery(`ALTER DATABASE "${cell.db.name}" ALLOW_CONNECTIONS true`);
  const role = `cells_limited_${process.pid}`;
  const password = 'limited-pw';
  await adminQuery(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
  await adminQuery(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' CONNECTION LIMIT 1`);
  try {
    await rowsIn(cell.db.url, `GRANT ALL ON ALL TABLES IN SCHEMA public TO ${role}`);
    const url = new URL(cell.db.url);
    url.username = role;
    url.password = password;
    const limited = await world.lib.mappings.createCell({ name: `limited-${process.pid}`, databaseConnection: url.toString() });
    const widgets = world.lib.getRepository(Widget);
    await targetCell(limited, () => widgets.count());
    // The pool (poolSize 2) holds its one allowed connection in a transaction and needs a second.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const holder = targetCell(limited, () => world.lib.transaction(async () => {
      await widgets.count();
      await held;
    }));
    await sleep(100);
    const second = await targetCell(limited, () => widgets.count()).then(
      () => undefined,
      (error: unknown) => error,
    );
    release();
    await holder;
    expect(second).toBeInstanceOf(CellUnreachableError);
    expect(String((second as Error).message)).toMatch(/too many connections/);
  } finally {
    await adminQuery(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, [role]);
    await rowsIn(cell.db.url, `REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${role}`).catch(() => undefined);
    await adminQuery(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
  }
});
