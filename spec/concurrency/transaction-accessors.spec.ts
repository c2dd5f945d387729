import type { EntityManager, Repository } from 'typeorm';
import { CellMapping, RequestContext, runWithContext, targetCell } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

// The README promises that a routed repository's `manager` and `queryRunner` are the transaction's
// inside `cells.transaction`. Attack: read them at every stage of a transaction (before its first
// statement, with a nested savepoint queued or open, after it), from the enclosing level and from
// the nested callbacks, while other requests on other cells do the same.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('atk_accessors', { cellCount: 3, withMain: true });
});
afterAll(async () => {
  await world?.destroy();
});

/** What a routed repository's accessors show at one stage of a transaction. */
interface Seen {
  stage: string;
  manager: boolean;
  queryRunner: boolean;
  metadata: boolean;
  target: boolean;
}

/** Reads every accessor of `repo`, compared with the transaction's `manager`. */
function look(stage: string, repo: Repository<object>, manager: EntityManager, target: unknown): Seen {
  return {
    stage,
    manager: repo.manager === manager,
    queryRunner: repo.queryRunner !== undefined && repo.queryRunner === manager.queryRunner,
    metadata: repo.metadata.target === target && repo.metadata.tableName.length > 0,
    target: repo.target === target,
  };
}

const allTrue = (stage: string): Seen => ({ stage, manager: true, queryRunner: true, metadata: true, target: true });

/**
 * Runs a transaction in which `repo`'s accessors are read at every stage, with two nested
 * transactions started together (the second queued behind the first).
 */
async function everyStage(repo: Repository<object>, write: () => Promise<unknown>, db: 'main' | 'api'): Promise<Seen[]> {
  const seen: Seen[] = [];
  await world.lib.transaction(
    async (manager) => {
      seen.push(look('before the first statement', repo, manager, repo.target));
      await write();
      let firstOpen!: () => void;
      const opened = new Promise<void>((resolve) => (firstOpen = resolve));
      const first = world.lib.transaction(async () => {
        seen.push(look('inside a savepoint', repo, manager, repo.target));
        firstOpen();
        await sleep(40);
        await write();
        seen.push(look('inside a savepoint, after a statement', repo, manager, repo.target));
      }, { db });
      const second = world.lib.transaction(async () => {
        seen.push(look('inside the second savepoint', repo, manager, repo.target));
        await write();
      }, { db });
      seen.push(look('with two savepoints queued', repo, manager, repo.target));
      await opened;
      seen.push(look('with a savepoint open and one queued', repo, manager, repo.target));
      await first;
      seen.push(look('with the second savepoint open', repo, manager, repo.target));
      await second;
      seen.push(look('after the savepoints', repo, manager, repo.target));
      await write();
    },
    { db },
  );
  return seen;
}

const STAGES = [
  'before the first statement',
  'with two savepoints queued',
  'inside a savepoint',
  'with a savepoint open and one queued',
  'inside a savepoint, after a statement',
  'with the second savepoint open',
  'inside the second savepoint',
  'after the savepoints',
];

const sortByStage = (seen: Seen[]) => [...seen].sort((a, b) => STAGES.indexOf(a.stage) - STAGES.indexOf(b.stage));

describe("a routed repository's accessors inside cells.transaction", () => {
  it("are the transaction's at every stage, on every cell, with requests interleaved", async () => {
    const widgets = world.lib.getRepository(Widget) as unknown as Repository<object>;
    const runs = world.cells.flatMap(({ mapping }) =>
      [0, 1].map((i) =>
        (async () => {
          await sleep(i * 7);
          return targetCell(mapping, () => everyStage(widgets, () => widgets.insert(widgetFor(mapping.uuid)), 'main'));
        })(),
      ),
    );
    // Plain calls of the same cells run meanwhile, outside any transaction.
    const outside = world.cells.map(({ mapping }) =>
      targetCell(mapping, async () => {
        const seen: Array<EntityManager | undefined> = [];
        for (let i = 0; i < 10; i++) {
          await widgets.count();
          seen.push(widgets.queryRunner?.manager);
          await sleep(5);
        }
        return seen;
      }),
    );
    for (const seen of await Promise.all(runs)) {
      expect(sortByStage(seen)).toEqual(STAGES.map(allTrue));
    }
    // Outside a transaction a repository has no query runner: no transaction's leaks out.
    expect((await Promise.all(outside)).flat().filter((m) => m !== undefined)).toEqual([]);
  });

  it("are the transaction's on the default main database and the API database", async () => {
    const widgets = world.lib.getRepository(Widget) as unknown as Repository<object>;
    const mappings = world.lib.getRepository(CellMapping, 'api') as unknown as Repository<object>;
    const api = await targetCell(world.cells[0]!.mapping, () => everyStage(mappings, () => mappings.count(), 'api'));
    expect(sortByStage(api)).toEqual(STAGES.map(allTrue));
    const main = await runWithContext(new RequestContext(), () =>
      everyStage(widgets, () => widgets.insert(widgetFor('main')), 'main'),
    );
    expect(sortByStage(main)).toEqual(STAGES.map(allTrue));
  });
});
