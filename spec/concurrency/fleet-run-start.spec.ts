import 'reflect-metadata';
import { MigrationRun, type MigrationRunOptions } from '../../entities/MigrationRun';
import type { MigrationRunCell } from '../../entities/MigrationRunCell';
import { Client } from 'pg';
import { FleetRunBusyError } from '../../lib';
import { resumeFleetMigration, startFleetMigration } from '../../lib/cli/fleet-migration';
import { FLEET_RUN_LOCK_CLASS, tryLockRun, type FleetRunLock } from '../../lib/cli/fleet-run-lock';
import { MigrationJournal } from '../../lib/cli/migration-journal';
import { createCellWorld, type CellWorld } from '../support/cells';
import { CreateWidgets1764072100000, Widget } from '../support/widget';

// `db migrate --all` records its run, then works on it under the run's lock. A `db migrate
// --resume` started by another process at that moment (a second deploy job, an operator) finds the
// new run the newest unfinished one: it must find it locked, not take it from the process that
// started it (which then failed with FleetRunBusyError while the other ran its run).
let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('fleetstart', { cellCount: 2 });
}, 60_000);

afterAll(async () => {
  await world?.destroy();
}, 60_000);

const OPTIONS: MigrationRunOptions = { concurrency: 2, maxPerServer: null, waveSize: null, canary: null, continueOnError: false, lockTimeoutMs: 5_000 };

it('holds the lock of a new run from the moment another process can see the run', async () => {
  const other: { tried: boolean; lock?: FleetRunLock | undefined } = { tried: false };
  /** The other process: as soon as the run is visible, --resume takes the newest unfinished run's lock. */
  class WatchedJournal extends MigrationJournal {
    override async startRun(
      options: MigrationRunOptions,
      plan: readonly { uuid: string; name: string; wave: number }[],
      ...rest: unknown[]
    ): Promise<{ run: MigrationRun; cells: MigrationRunCell[] }> {
      const started = await (super.startRun as (...args: unknown[]) => Promise<{ run: MigrationRun; cells: MigrationRunCell[] }>).call(this, options, plan, ...rest);
      const newest = await new MigrationJournal(world.lib.getRepository(MigrationRun, 'api').manager).newestUnfinishedRun();
      expect(newest?.id).toBe(started.run.id);
      other.tried = true;
      other.lock = await tryLockRun(this.dataSource, newest!.id);
      return started;
    }
  }
  const journal = new WatchedJournal(world.lib.getRepository(MigrationRun, 'api').manager);
  const cells = world.cells.map((c) => c.mapping);
  const outcome = await startFleetMigration(
    { api: world.api.url, entities: [Widget], migrations: [CreateWidgets1764072100000] },
    journal,
    cells,
    OPTIONS,
    { interrupted: false },
    true,
  ).catch((error: unknown) => error);
  await other.lock?.release();
  expect(other.tried).toBe(true);
  expect(other.lock).toBeUndefined();
  expect(outcome).toMatchObject({ run: { state: 'succeeded' } });
}, 55_000);

it('names the session holding a run it cannot resume, and how to end it (a process gone with its host)', async () => {
  const journal = new MigrationJournal(world.lib.getRepository(MigrationRun, 'api').manager);
  const cells = world.cells.map((c) => c.mapping);
  const started = await journal.startRun(OPTIONS, cells.map((c) => ({ uuid: c.uuid, name: c.name, wave: 1 })));
  const resume = () =>
    resumeFleetMigration({ api: world.api.url, entities: [Widget], migrations: [CreateWidgets1764072100000] }, journal, started.run, cells, { interrupted: false }, true);
  // The session of a process whose host died: the server still holds it, and its lock.
  const zombie = new Client({ connectionString: world.api.url });
  zombie.on('error', () => undefined);
  await zombie.connect();
  try {
    const [{ pid }] = (await zombie.query('SELECT pg_backend_pid() AS pid')).rows as [{ pid: number }];
    await zombie.query('SELECT pg_advisory_lock($1, $2)', [FLEET_RUN_LOCK_CLASS, started.run.id]);
    const refused = await resume().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(FleetRunBusyError);
    expect((refused as Error).message).toContain(`pid ${pid}`);
    expect((refused as Error).message).toContain(`SELECT pg_terminate_backend(${pid})`);
    await world.lib.getRepository(MigrationRun, 'api').query('SELECT pg_terminate_backend($1)', [pid]);
  } finally {
    await zombie.end().catch(() => undefined);
  }
  const outcome = await resume();
  expect(outcome.run.state).toBe('succeeded');
}, 55_000);
