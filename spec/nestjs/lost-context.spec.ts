import {
  Controller,
  Get,
  Inject,
  Injectable,
  Module,
  Req,
  UseGuards,
  type CallHandler,
  type CanActivate,
  type ExecutionContext,
  type INestApplication,
  type MiddlewareConsumer,
  type NestInterceptor,
  type NestModule,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import type { Observable } from 'rxjs';
import request from 'supertest';
import { Cells, targetCell, tryGetContext } from '../../lib';
import { CellsContextMiddleware, CellsExceptionFilter, CellsModule, TargetCell, requestContextOf } from '../../lib/nestjs';
import { createCellWorld, type CellWorld } from '../support/cells';
import { serverSpanMiddleware, sharedClientResume } from '../support/nest-middleware';
import { createTestSdk, enableContext, type TestSdk } from '../support/telemetry';
import { Widget } from '../support/widget';

/*
 * A middleware after CellsContextMiddleware that calls next() from another async context: a shared
 * client created lazily inside the first request (a session store, a rate limiter) runs every later
 * request's next() in that first request's async context.
 */

let world: CellWorld;
let sdk: TestSdk;
let disable: () => void;
const resume = sharedClientResume();
const ServerSpanMiddleware = serverSpanMiddleware(() => sdk.tracerProvider);

type Seen = Record<string, unknown>;
const seenOf = (req: { raw?: Seen } & Seen): Seen => req.raw ?? req;
const describeContext = (): string => {
  const ctx = tryGetContext();
  return ctx === undefined ? 'none' : `${ctx.requestId}/${ctx.isAdmin ? 'admin' : 'user'}`;
};

@Injectable()
class SeeGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    seenOf(context.switchToHttp().getRequest()).guard = describeContext();
    return true;
  }
}

/** A global interceptor of a module imported before CellsModule: it runs before CellsContextInterceptor. */
@Injectable()
class SeeInterceptor implements NestInterceptor {
  label = 'interceptor';

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    seenOf(context.switchToHttp().getRequest())[this.label] = describeContext();
    return next.handle();
  }
}

/** An auth guard that reads through the library: its routed call runs before CellsContextInterceptor. */
@Injectable()
class LookupGuard implements CanActivate {
  constructor(@Inject(Cells) private readonly cells: Cells) {}

  async canActivate(): Promise<boolean> {
    await targetCell(world.cells[0]!.mapping, () => this.cells.getRepository(Widget).count());
    return true;
  }
}

@Controller('lost')
class LostController {
  constructor(@Inject(Cells) private readonly cells: Cells) {}

  @Get('see')
  @UseGuards(SeeGuard)
  see(@Req() req: { raw?: Seen } & Seen): unknown {
    const seen = seenOf(req);
    return { guard: seen.guard, interceptor: seen.interceptor, useGlobal: seen.useGlobal, handler: describeContext(), of: requestContextOf(req)?.requestId };
  }

  @Get('guarded')
  @UseGuards(LookupGuard)
  guarded(): unknown {
    return { ok: true };
  }

  @Get('cell/:cell')
  @TargetCell('cell')
  async count(): Promise<unknown> {
    return { n: await this.cells.getRepository(Widget).count() };
  }
}

@Module({ controllers: [LostController], providers: [{ provide: APP_INTERCEPTOR, useClass: SeeInterceptor }] })
class LostModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(ServerSpanMiddleware, CellsContextMiddleware, resume.Middleware).forRoutes(LostController);
  }
}

beforeAll(async () => {
  disable = enableContext();
  sdk = createTestSdk();
  world = await createCellWorld('nestlost', { cellCount: 1 });
}, 60_000);
afterAll(async () => {
  resume.stop();
  await world?.destroy();
  await sdk?.shutdown();
  disable?.();
});

async function createApp(adapter: 'express' | 'fastify'): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({
    // LostModule first: its APP_INTERCEPTOR runs before CellsContextInterceptor.
    imports: [LostModule, CellsModule.forRoot({ api: world.api.url, entities: [Widget], telemetry: { tracerProvider: sdk.tracerProvider } })],
  }).compile();
  const app = moduleRef.createNestApplication(adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(), { logger: false });
  app.useGlobalFilters(new CellsExceptionFilter());
  // Runs before every APP_INTERCEPTOR.
  app.useGlobalInterceptors(Object.assign(new SeeInterceptor(), { label: 'useGlobal' }));
  await app.init();
  if (adapter === 'fastify') await (app.getHttpAdapter().getInstance() as { ready(): Promise<void> }).ready();
  return app;
}

describe.each(['express', 'fastify'] as const)('a middleware that resumes next() from another request, under %s', (adapter) => {
  let app: INestApplication;
  beforeAll(async () => {
    app = await createApp(adapter);
  }, 60_000);
  afterAll(async () => {
    await app?.close();
    resume.stop();
  });

  it('leaves guards, earlier interceptors and the handler in their own request context', async () => {
    const server = app.getHttpServer();
    await request(server).get('/lost/see').set('x-request-id', 'first').set('x-roles', 'admin').expect(200);
    const answers = await Promise.all(
      [1, 2, 3].map((i) => request(server).get('/lost/see').set('x-request-id', `later-${i}`).expect(200)),
    );
    answers.forEach((answer, i) => {
      const own = `later-${i + 1}/user`;
      expect(answer.body).toEqual({ guard: own, interceptor: own, useGlobal: own, handler: own, of: `later-${i + 1}` });
    });
  });

  it("puts the library's spans in the trace of their own request", async () => {
    const server = app.getHttpServer();
    const cell = world.cells[0]!.mapping.name;
    await request(server).get(`/lost/cell/${cell}`).set('x-request-id', 'A').expect(200);
    sdk.exporter.reset();
    await request(server).get(`/lost/cell/${cell}`).set('x-request-id', 'B').expect(200);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const spans = sdk.spans();
    const serverSpan = spans.find((span) => span.name === 'GET B')!;
    const library = spans.filter((span) => span.instrumentationScope.name === 'typeorm-cells');
    expect(library.length).toBeGreaterThan(0);
    for (const span of library) expect(span.spanContext().traceId).toBe(serverSpan.spanContext().traceId);
  });

  it("puts the spans of a guard's routed call under the server span of its own request", async () => {
    const server = app.getHttpServer();
    await request(server).get('/lost/guarded').set('x-request-id', 'A').expect(200);
    sdk.exporter.reset();
    await request(server).get('/lost/guarded').set('x-request-id', 'B').expect(200);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const spans = sdk.spans();
    const serverSpan = spans.find((span) => span.name === 'GET B')!;
    const calls = spans.filter((span) => span.instrumentationScope.name === 'typeorm-cells' && span.name.startsWith('count'));
    expect(calls).toHaveLength(1);
    expect(calls[0]!.spanContext().traceId).toBe(serverSpan.spanContext().traceId);
    expect(calls[0]!.parentSpanContext?.spanId).toBe(serverSpan.spanContext().spanId);
  });

  it("starts a guard's routed call of an untraced request in no other request's trace", async () => {
    const server = app.getHttpServer();
    await request(server).get('/lost/guarded').set('x-request-id', 'A').expect(200);
    sdk.exporter.reset();
    await request(server).get('/lost/guarded').set('x-request-id', 'B').set('x-untraced', '1').expect(200);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const calls = sdk.spans().filter((span) => span.instrumentationScope.name === 'typeorm-cells' && span.name.startsWith('count'));
    expect(calls).toHaveLength(1);
    expect(calls[0]!.parentSpanContext).toBeUndefined();
  });
});
