import fc from 'fast-check';
import { DataSource, type Repository, type SelectQueryBuilder } from 'typeorm';
import { targetCell } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { createTestDatabase, rowsIn, type TestDatabase } from '../support/databases';
import { CreateWidgets1764072100000, Widget } from '../support/widget';

// Issue 9, case 10, differential: the same seeded random sequence of repository and builder
// operations against a routed repository (targeted at a cell) and a plain TypeORM repository of an
// identical separate database must give identical results and identical error classes. The routed
// side's shared builder is first run in another cell, as a request elsewhere would.

const SEED = 90_210;
const RUNS = 25;
const KEYS = [0, 1, 2, 3].map((k) => `00000000-0000-4000-8000-00000000000${k}`);

let world: CellWorld;
let plainDb: TestDatabase;
let plain: DataSource;

beforeAll(async () => {
  world = await createCellWorld('conc_diff', { cellCount: 2 });
  plainDb = await createTestDatabase('conc_diff_plain');
  await migrateCellDatabase(plainDb.url, [CreateWidgets1764072100000]);
  plain = await new DataSource({ type: 'postgres', url: plainDb.url, entities: [Widget], poolSize: 2 }).initialize();
});
afterAll(async () => {
  await plain?.destroy();
  await plainDb?.drop();
  await world?.destroy();
});

type Op =
  | { op: 'insert' | 'save'; key: number; size: number }
  | { op: 'update' | 'increment'; key: number; size: number }
  | { op: 'softDelete' | 'restore' | 'delete' | 'findOneByOrFail'; key: number }
  | { op: 'find' | 'count' | 'sum' | 'qbGetMany' | 'qbCloneCount' | 'qbDerivedRaw' }
  | { op: 'qbCloneAbove'; size: number }
  | { op: 'qbUpdate' | 'qbInsert'; key: number; size: number }
  | { op: 'qbSoftDelete' | 'qbRestore' | 'qbDelete'; key: number };

const key = fc.integer({ min: 0, max: KEYS.length - 1 });
const size = fc.integer({ min: 0, max: 9 });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constantFrom('insert' as const, 'save' as const, 'update' as const, 'increment' as const), key, size }),
  fc.record({ op: fc.constantFrom('softDelete' as const, 'restore' as const, 'delete' as const, 'findOneByOrFail' as const), key }),
  fc.record({ op: fc.constantFrom('find' as const, 'count' as const, 'sum' as const, 'qbGetMany' as const, 'qbCloneCount' as const, 'qbDerivedRaw' as const) }),
  fc.record({ op: fc.constant('qbCloneAbove' as const), size }),
  fc.record({ op: fc.constantFrom('qbUpdate' as const, 'qbInsert' as const), key, size }),
  fc.record({ op: fc.constantFrom('qbSoftDelete' as const, 'qbRestore' as const, 'qbDelete' as const), key }),
);

/** A result as both sides are compared: dates and driver noise dropped. */
function normalise(value: unknown): unknown {
  if (value instanceof Date) return 'date';
  if (Array.isArray(value)) return value.map(normalise);
  if (value !== null && typeof value === 'object') {
    if ('affected' in value) return { affected: (value as { affected?: unknown }).affected };
    if ('identifiers' in value) return 'inserted';
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]));
  }
  return value;
}

/** What an error looks like across both sides: its class, and PostgreSQL's code for query errors. */
function errorShape(error: unknown): unknown {
  const driverCode = (error as { driverError?: { code?: unknown } }).driverError?.code;
  return { error: (error as Error)?.constructor?.name ?? typeof error, ...(driverCode ? { code: driverCode } : {}) };
}

function row(k: number, s: number): Partial<Widget> {
  return { uuid: KEYS[k]!, name: `w${k}`, intendedCell: 'diff', size: s };
}

async function apply(repo: Repository<Widget>, base: SelectQueryBuilder<Widget>, step: Op): Promise<unknown> {
  switch (step.op) {
    case 'insert':
      return repo.insert(row(step.key, step.size));
    case 'save':
      return repo.save(repo.create(row(step.key, step.size)));
    case 'update':
      return repo.update({ uuid: KEYS[step.key]! }, { size: step.size });
    case 'increment':
      return repo.increment({ uuid: KEYS[step.key]! }, 'size', step.size);
    case 'softDelete':
      return repo.softDelete({ uuid: KEYS[step.key]! });
    case 'restore':
      return repo.restore({ uuid: KEYS[step.key]! });
    case 'delete':
      return repo.delete({ uuid: KEYS[step.key]! });
    case 'findOneByOrFail':
      return repo.findOneByOrFail({ uuid: KEYS[step.key]! });
    case 'find':
      return repo.find({ order: { uuid: 'ASC' } });
    case 'count':
      return repo.count();
    case 'sum':
      return repo.sum('size');
    case 'qbGetMany':
      return base.getMany();
    case 'qbCloneCount':
      return base.clone().getCount();
    case 'qbCloneAbove':
      return base.clone().andWhere('w.size > :s', { s: step.size }).getMany();
    case 'qbDerivedRaw':
      return base.createQueryBuilder().select('x.uuid', 'uuid').from(Widget, 'x').orderBy('x.uuid').getRawMany();
    case 'qbUpdate':
      return base.update().set({ size: step.size }).where('uuid = :k', { k: KEYS[step.key] }).execute();
    case 'qbInsert':
      return base.insert().into(Widget).values(row(step.key, step.size)).execute();
    case 'qbSoftDelete':
      return base.softDelete().where('uuid = :k', { k: KEYS[step.key] }).execute();
    case 'qbRestore':
      return base.restore().where('uuid = :k', { k: KEYS[step.key] }).execute();
    case 'qbDelete':
      return base.delete().where('uuid = :k', { k: KEYS[step.key] }).execute();
  }
}

async function runAll(repo: Repository<Widget>, base: SelectQueryBuilder<Widget>, program: Op[]): Promise<unknown[]> {
  const outcomes: unknown[] = [];
  for (const step of program) {
    try {
      outcomes.push(normalise(await apply(repo, base, step)));
    } catch (error) {
      outcomes.push(errorShape(error));
    }
  }
  return outcomes;
}

describe('a routed repository against plain TypeORM', () => {
  it('gives identical results and error classes for the same random operations', async () => {
    const routedRepo = world.lib.getRepository(Widget);
    const [target, elsewhere] = world.cells.map((c) => c.mapping);
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), async (program) => {
        await rowsIn(world.cells[0]!.db.url, 'TRUNCATE widgets');
        await rowsIn(plainDb.url, 'TRUNCATE widgets');
        const plainRepo = plain.getRepository(Widget);
        const expected = await runAll(plainRepo, plainRepo.createQueryBuilder('w').orderBy('w.uuid'), program);
        const routedBase = routedRepo.createQueryBuilder('w').orderBy('w.uuid');
        // A request in another cell ran the shared builder first.
        await targetCell(elsewhere!, () => routedBase.getCount());
        const actual = await targetCell(target!, () => runAll(routedRepo, routedBase, program));
        expect(actual).toEqual(expected);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
  });
});
