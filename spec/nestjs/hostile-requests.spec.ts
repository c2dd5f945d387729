import { Controller, Get, Inject, Module, type INestApplication, type LoggerService, type MiddlewareConsumer, type NestModule } from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { Client } from 'pg';
import request from 'supertest';
import { Cells, getContext } from '../../lib';
import { CellsContextMiddleware, CellsExceptionFilter, CellsModule, TargetCell } from '../../lib/nestjs';
import { createCellWorld, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

const SENTINEL = 'hostile-sentinel-pw';
let world: CellWorld;

@Controller('h')
class HostileController {
  constructor(@Inject(Cells) private readonly cells: Cells) {}

  @Get('roles')
  roles(): unknown {
    return { isAdmin: getContext().isAdmin };
  }

  /** A server bug: the decorator names a route parameter the route lacks. */
  @Get('no-param')
  @TargetCell('cell')
  noParam(): unknown {
    return {};
  }

  @Get('cell/:cell')
  @TargetCell('cell')
  async cell(): Promise<unknown> {
    return { n: await this.cells.getRepository(Widget).count() };
  }
}

@Module({ controllers: [HostileController] })
class HostileModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(CellsContextMiddleware).forRoutes(HostileController);
  }
}

beforeAll(async () => {
  world = await createCellWorld('nesthostile', { cellCount: 1 });
  const mapping = await world.lib.mappings.createCell({ name: 'malformed', databaseConnection: world.cells[0]!.db.url });
  // Written past the library's checks, as a hand-edited row would be.
  const client = new Client({ connectionString: world.api.url });
  await client.connect();
  try {
    await client.query('UPDATE cell_mappings SET database_connection = $1 WHERE uuid = $2', [`postgres://u:${SENTINEL}%ZZ@127.0.0.1:5432/db`, mapping.uuid]);
  } finally {
    await client.end();
  }
}, 60_000);
afterAll(async () => {
  await world?.destroy();
});

describe.each(['express', 'fastify'] as const)('under %s', (adapter) => {
  let app: INestApplication;
  const logged: string[] = [];
  const log = (...args: unknown[]) => void logged.push(args.map(String).join(' '));
  const logger: LoggerService = { log, error: log, warn: log, debug: log, verbose: log, fatal: log };

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CellsModule.forRoot({ api: world.api.url, entities: [Widget] }), HostileModule] }).compile();
    app = moduleRef.createNestApplication(adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(), { logger });
    app.useGlobalFilters(new CellsExceptionFilter());
    await app.init();
    if (adapter === 'fastify') await (app.getHttpAdapter().getInstance() as { ready(): Promise<void> }).ready();
  }, 60_000);
  afterAll(async () => {
    await app?.close();
  });

  it('refuses x-roles sent twice with 400, as the id headers', async () => {
    const twice = await request(app.getHttpServer()).get('/h/roles').set('x-roles', ['user', 'admin'] as unknown as string);
    expect(twice.status).toBe(400);
    expect(twice.body).toMatchObject({ code: 'CELLS_INVALID_HEADER' });
    expect(twice.body.message).toMatch(/x-roles/);
    const once = await request(app.getHttpServer()).get('/h/roles').set('x-roles', 'viewer, ADMIN ');
    expect(once.status).toBe(200);
    expect(once.body).toEqual({ isAdmin: true });
  });

  it('answers 500 for @TargetCell naming a parameter the route lacks, and logs why', async () => {
    const response = await request(app.getHttpServer()).get('/h/no-param');
    expect(response.status).toBe(500);
    expect(response.body).toMatchObject({ code: 'INTERNAL' });
    expect(logged.join('\n')).toMatch(/MissingRouteParameterError: The route of HostileController.noParam has no parameter 'cell'/);
  });

  it('answers 503 for a cell whose stored connection URL is malformed, without its password', async () => {
    const response = await request(app.getHttpServer()).get('/h/cell/malformed');
    expect(response.status).toBe(503);
    expect(response.body).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
    expect(response.text).not.toContain(SENTINEL);
    expect(logged.join('\n')).not.toContain(SENTINEL);
  });
});
