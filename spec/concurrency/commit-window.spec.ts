import { randomUUID } from 'node:crypto';
import type { Repository } from 'typeorm';
import { targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Attack: a transaction counts as running until its COMMIT has returned. Work scheduled inside it
// (a timer) that starts while the COMMIT is in flight joins the committing transaction: a nested
// transaction then opens a savepoint on a connection whose transaction is ending.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('atk_cwin', { cellCount: 1 });
  // A deferred constraint trigger makes COMMIT take ~600 ms when a 'slowcommit' row was inserted.
  const url = world.cells[0]!.db.url;
  await rowsIn(url, `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$`);
  await rowsIn(url, `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON widgets DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.name LIKE 'slowcommit%') EXECUTE FUNCTION slow_commit()`);
});
afterAll(async () => {
  await world?.destroy();
});

const namesIn = async (tag: string) =>
  (await rowsIn<{ name: string }>(world.cells[0]!.db.url, 'SELECT name FROM widgets WHERE name LIKE $1 ORDER BY name', [`%${tag}%`])).map((r) => r.name);

/**
 * Inserts a row in a transaction whose callback schedules `lateWork` 250 ms later, while the COMMIT
 * runs, then checks that both rows landed and no connection is left in a transaction.
 */
async function scheduleDuringCommit(lateWork: (cell: CellMapping, repo: Repository<Widget>, tag: string) => Promise<unknown>): Promise<void> {
  const cell = world.cells[0]!.mapping;
  const repo = world.lib.getRepository(Widget);
  const tag = randomUUID().slice(0, 8);
  let late!: Promise<string>;
  await targetCell(cell, () =>
    world.lib.transaction(async () => {
      await repo.insert(widgetFor(cell.uuid, `slowcommit-${tag}`));
      late = new Promise((resolve) => {
        setTimeout(() => {
          lateWork(cell, repo, tag).then(() => resolve('ok'), (e: Error) => resolve(`${e.constructor.name}: ${e.message}`));
        }, 250);
      });
    }),
  );
  expect(await late).toBe('ok');
  expect(await namesIn(tag)).toEqual([`late-${tag}`, `slowcommit-${tag}`]);
  await sleep(50);
  await expectNoConnectionInTransaction(world.cells[0]!.db.name);
}

describe('work scheduled in a transaction that starts while its COMMIT runs', () => {
  it('a nested transaction started by a timer during COMMIT commits its own row', async () => {
    await scheduleDuringCommit((cell, repo, tag) =>
      world.lib.transaction(async () => {
        await repo.insert(widgetFor(cell.uuid, `late-${tag}`));
      }),
    );
  });

  it('a plain write started by a timer during COMMIT succeeds', async () => {
    await scheduleDuringCommit((cell, repo, tag) => repo.save(repo.create(widgetFor(cell.uuid, `late-${tag}`))));
  });
});
