import 'reflect-metadata';
import type { EntitySubscriberInterface } from 'typeorm';
import { MigrationRun, type MigrationRunOptions } from '../../entities/MigrationRun';
import { MigrationRunCell } from '../../entities/MigrationRunCell';
import { MigrationJournal } from '../../lib/cli/migration-journal';
import { createCellWorld, type CellWorld } from '../support/cells';

// `db fleet-status` shows each cell's last run from the journal, which grows by one row per cell
// per deploy (a fleet of 5,000 cells deployed daily: 1.8 million rows a year). It must read one
// row per cell, not every row each cell ever had.
let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('journal_last', { cellCount: 1 });
}, 60_000);

afterAll(async () => {
  await world?.destroy();
}, 60_000);

const OPTIONS: MigrationRunOptions = { concurrency: 1, maxPerServer: null, waveSize: null, canary: null, continueOnError: false, lockTimeoutMs: 1_000 };

it("reads one journal row per cell for the cells' last runs, however many runs there were", async () => {
  const manager = world.lib.getRepository(MigrationRun, 'api').manager;
  const journal = new MigrationJournal(manager);
  const uuids = Array.from({ length: 10 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
  let last: number | undefined;
  for (let run = 0; run < 30; run++) {
    // The last cell is in the first run only: its last run is that one.
    const plan = uuids.slice(0, run === 0 ? 10 : 9).map((uuid, i) => ({ uuid, name: `c${i}`, wave: 0 }));
    const started = await journal.startRun(OPTIONS, plan);
    await journal.cellEnded(started.cells[0]!, 'failed', [], `run ${run}`);
    if (run === 0) last = started.run.id;
  }
  const firstRun = last!;
  let loaded = 0;
  const counter: EntitySubscriberInterface<MigrationRunCell> = {
    listenTo: () => MigrationRunCell,
    afterLoad: () => void loaded++,
  };
  manager.connection.subscribers.push(counter);
  try {
    const outcomes = await journal.lastOutcomes(uuids);
    expect(outcomes.size).toBe(10);
    expect(outcomes.get(uuids[0]!)?.error).toBe('run 29');
    expect(outcomes.get(uuids[9]!)?.runId).toBe(firstRun);
    expect(loaded).toBeLessThanOrEqual(10);
  } finally {
    manager.connection.subscribers.splice(manager.connection.subscribers.indexOf(counter), 1);
  }
}, 55_000);
