import { In } from 'typeorm';
import { RequestContext, runWithContext, targetCell, type ReadDeleted } from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { Widget } from './support/widget';

let world: CellWorld;
const live = widgetFor('', 'live');
const gone = widgetFor('', 'gone');

beforeAll(async () => {
  world = await createCellWorld('rd', { cellCount: 1 });
  const target = world.cells[0]!.mapping;
  const widgets = world.lib.getRepository(Widget);
  await targetCell(target, async () => {
    await widgets.insert([
      { ...live, intendedCell: target.uuid, size: 2 },
      { ...gone, intendedCell: target.uuid, size: 5 },
    ]);
    await widgets.softDelete({ uuid: gone.uuid! });
  });
});
afterAll(async () => {
  await world?.destroy();
});

function inMode<T>(mode: ReadDeleted, fn: () => Promise<T>): Promise<T> {
  return runWithContext(new RequestContext({ readDeleted: mode, cell: world.cells[0]!.mapping }), fn);
}

const both = () => ({ uuid: In([live.uuid!, gone.uuid!]) });

describe.each([
  ['no', ['live']],
  ['yes', ['gone', 'live']],
  ['only', ['gone']],
] as Array<[ReadDeleted, string[]]>)("readDeleted '%s'", (mode, expected) => {
  const names = (rows: Widget[]) => rows.map((r) => r.name).sort();

  it('applies to find, findBy and findAndCount', async () => {
    const widgets = world.lib.getRepository(Widget);
    await inMode(mode, async () => {
      expect(names(await widgets.find({ where: both() }))).toEqual(expected);
      expect(names(await widgets.findBy(both()))).toEqual(expected);
      const [rows, count] = await widgets.findAndCount({ where: both() });
      expect(names(rows)).toEqual(expected);
      expect(count).toBe(expected.length);
    });
  });

  it('applies to findOneBy, countBy, existsBy and sum', async () => {
    const widgets = world.lib.getRepository(Widget);
    await inMode(mode, async () => {
      expect((await widgets.findOneBy({ uuid: gone.uuid! })) !== null).toBe(expected.includes('gone'));
      expect(await widgets.countBy(both())).toBe(expected.length);
      expect(await widgets.existsBy({ uuid: live.uuid! })).toBe(expected.includes('live'));
      const sizes = { live: 2, gone: 5 } as Record<string, number>;
      expect(await widgets.sum('size', both())).toBe(expected.reduce((s, n) => s + sizes[n]!, 0));
    });
  });

  it('applies to a routed query builder, even after where()', async () => {
    const widgets = world.lib.getRepository(Widget);
    await inMode(mode, async () => {
      const rows = await widgets.createQueryBuilder('w').where('w.uuid IN (:...ids)', { ids: [live.uuid, gone.uuid] }).getMany();
      expect(names(rows)).toEqual(expected);
    });
  });
});
