import { In } from 'typeorm';
import { RequestContext, runWithContext, type ReadDeleted } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

// Issue 9, case 2: readDeleted belongs to one execution. A builder or an options object reused by
// requests in different modes must not keep the mode of an earlier request.

let world: CellWorld;
const live = widgetFor('', 'reuse-live');
const gone = widgetFor('', 'reuse-gone');

beforeAll(async () => {
  world = await createCellWorld('conc_rd', { cellCount: 2 });
  const widgets = world.lib.getRepository(Widget);
  for (const { mapping } of world.cells) {
    await inMode('no', mapping.uuid, async () => {
      await widgets.insert([
        { ...live, intendedCell: mapping.uuid },
        { ...gone, intendedCell: mapping.uuid },
      ]);
      await widgets.softDelete({ uuid: gone.uuid! });
    });
  }
});
afterAll(async () => {
  await world?.destroy();
});

function inMode<T>(mode: ReadDeleted, cellUuid: string, fn: () => Promise<T>): Promise<T> {
  return runWithContext(new RequestContext({ readDeleted: mode, cell: cellUuid }), fn);
}

const EXPECTED: Record<ReadDeleted, string[]> = {
  no: ['reuse-live'],
  yes: ['reuse-gone', 'reuse-live'],
  only: ['reuse-gone'],
};
const names = (rows: Widget[]) => rows.map((r) => r.name).sort();
const both = { uuid: In([live.uuid!, gone.uuid!]) };
const widgets = () => world.lib.getRepository(Widget);
const cellUuid = (i: number) => world.cells[i]!.mapping.uuid;

describe('readDeleted on a reused builder or options object', () => {
  it.each([
    ['only', 'no'],
    ['yes', 'no'],
    ['only', 'yes'],
    ['yes', 'only'],
  ] as Array<[ReadDeleted, ReadDeleted]>)(
    "applies '%s' to one execution of a builder and '%s' to the next",
    async (first, second) => {
      const qb = widgets().createQueryBuilder('w').where('w.uuid IN (:...ids)', { ids: [live.uuid, gone.uuid] });
      expect(names(await inMode(first, cellUuid(0), () => qb.getMany()))).toEqual(EXPECTED[first]);
      expect(names(await inMode(second, cellUuid(0), () => qb.getMany()))).toEqual(EXPECTED[second]);
      expect(await inMode(second, cellUuid(0), () => qb.getCount())).toBe(EXPECTED[second].length);
    },
  );

  it("leaves no trace of 'only' on a builder's SQL after it ran", async () => {
    const qb = widgets().createQueryBuilder('w').where('w.uuid IN (:...ids)', { ids: [live.uuid, gone.uuid] });
    const before = qb.getQuery();
    await inMode('only', cellUuid(0), () => qb.getMany());
    expect(qb.getQuery()).toBe(before);
  });

  it.each([['only'], ['yes']] as Array<[ReadDeleted]>)(
    "applies '%s' to one find call and 'no' to the next with the same options object",
    async (first) => {
      const options = { where: both, order: { name: 'ASC' as const } };
      expect(names(await inMode(first, cellUuid(0), () => widgets().find(options)))).toEqual(EXPECTED[first]);
      expect(names(await inMode('no', cellUuid(0), () => widgets().find(options)))).toEqual(EXPECTED.no);
      expect(names(await inMode('no', cellUuid(0), () => widgets().findBy(both)))).toEqual(EXPECTED.no);
      expect(await inMode('no', cellUuid(0), () => widgets().count(options))).toBe(1);
    },
  );

  it('gives each of 240 interleaved requests in three modes over 2 cells its own mode on one builder', async () => {
    const qb = widgets().createQueryBuilder('w').where('w.uuid IN (:...ids)', { ids: [live.uuid, gone.uuid] });
    const options = { where: both };
    const modes: ReadDeleted[] = ['no', 'yes', 'only'];
    const results = await Promise.all(
      Array.from({ length: 240 }, async (_, i) => {
        const mode = modes[i % 3]!;
        const cell = cellUuid(Math.floor(i / 3) % 2);
        const read = await inMode(mode, cell, async () => {
          await sleep(i % 4);
          switch (Math.floor(i / 6) % 4) {
            case 0:
              return names(await qb.getMany());
            case 1:
              return names((await qb.getManyAndCount())[0]);
            case 2:
              return names(await widgets().find(options));
            default:
              return (await qb.getRawMany<{ w_name: string }>()).map((r) => r.w_name).sort();
          }
        });
        return { i, mode, read };
      }),
    );
    const wrong = results.filter(({ mode, read }) => JSON.stringify(read) !== JSON.stringify(EXPECTED[mode]));
    expect(wrong.slice(0, 5)).toEqual([]);
  });
});
