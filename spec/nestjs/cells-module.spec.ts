import { Injectable, Module, type OnModuleInit } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { Repository } from 'typeorm';
import { CellMapping, Cells, targetCell } from '../../lib';
import { CellsModule, InjectCellsRepository, getCellsRepositoryToken } from '../../lib/nestjs';
import { createCellWorld, widgetFor, widgetRowsIn, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('nestmod', { cellCount: 2 });
}, 60_000);
afterAll(async () => {
  await world?.destroy();
});

const API_URL = Symbol('API_URL');

@Module({ providers: [{ provide: API_URL, useFactory: () => world.api.url }], exports: [API_URL] })
class ConfigModule {}

@Injectable()
class WidgetService implements OnModuleInit {
  cellsAtInit = -1;

  constructor(
    @InjectCellsRepository(Widget) readonly widgets: Repository<Widget>,
    @InjectCellsRepository(CellMapping, 'api') readonly cellMappings: Repository<CellMapping>,
  ) {}

  async onModuleInit(): Promise<void> {
    // Cells is initialised before any provider that injects it is built.
    this.cellsAtInit = await this.cellMappings.count();
  }
}

@Module({ imports: [CellsModule.forFeature([Widget]), CellsModule.forFeature([CellMapping], 'api')], providers: [WidgetService] })
class WidgetModule {}

async function compile() {
  const moduleRef = await Test.createTestingModule({
    imports: [
      CellsModule.forRootAsync({
        imports: [ConfigModule],
        useFactory: (api: string) => ({ api: { url: api, poolSize: 2 }, entities: [Widget], poolSize: 2 }),
        inject: [API_URL],
      }),
      WidgetModule,
    ],
  }).compile();
  return moduleRef.init();
}

describe('CellsModule', () => {
  it('builds Cells from forRootAsync options and has it ready for onModuleInit', async () => {
    const app = await compile();
    try {
      expect(app.get(Cells).toJSON()).toMatchObject({ state: 'ready' });
      expect(app.get(WidgetService).cellsAtInit).toBe(2);
    } finally {
      await app.close();
    }
  });

  it('injects repositories routed by the request context', async () => {
    const app = await compile();
    try {
      const { widgets } = app.get(WidgetService);
      const [one, two] = world.cells;
      const a = widgetFor(one!.mapping.uuid);
      const b = widgetFor(two!.mapping.uuid);
      await targetCell(one!.mapping, () => widgets.save(widgets.create(a)));
      await targetCell(two!.mapping, () => widgets.save(widgets.create(b)));
      expect([await widgetRowsIn(one!.db.url, a.uuid), await widgetRowsIn(two!.db.url, a.uuid)]).toEqual([1, 0]);
      expect([await widgetRowsIn(one!.db.url, b.uuid), await widgetRowsIn(two!.db.url, b.uuid)]).toEqual([0, 1]);
      expect(app.get(getCellsRepositoryToken(Widget))).toBe(app.get(Cells).getRepository(Widget));
    } finally {
      await app.close();
    }
  });

  it('destroys Cells when the application closes', async () => {
    const app = await compile();
    const cells = app.get(Cells);
    await app.close();
    expect(cells.toJSON()).toMatchObject({ state: 'destroyed' });
  });

  it('gives each entity and database its own token', () => {
    expect(getCellsRepositoryToken(Widget)).toBe(getCellsRepositoryToken(Widget, 'main'));
    expect(getCellsRepositoryToken(Widget, 'api')).not.toBe(getCellsRepositoryToken(Widget));
    expect(String(getCellsRepositoryToken(Widget))).toBe('Symbol(CellsRepository(Widget, main))');
    expect(() => getCellsRepositoryToken(Widget, 'other' as 'api')).toThrow(/db must be 'api' or 'main'/);
  });
});
