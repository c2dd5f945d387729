import type { AddressInfo } from 'node:net';
import {
  Controller,
  Inject,
  Module,
  Sse,
  type INestApplication,
  type MiddlewareConsumer,
  type NestModule,
} from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { interval, mergeMap, take, type Observable } from 'rxjs';
import { Cells, targetCell, tryGetContext } from '../../lib';
import { CellsContextMiddleware, CellsExceptionFilter, CellsModule, TargetCell } from '../../lib/nestjs';
import { createCellWorld, type CellWorld } from '../support/cells';
import { serverSpanMiddleware, sharedClientResume } from '../support/nest-middleware';
import { createTestSdk, enableContext, type TestSdk } from '../support/telemetry';
import { Widget } from '../support/widget';

/*
 * Handlers that return an observable whose work starts when it is subscribed (an @Sse() stream's
 * interval): that work must run in the request's context, targeted cell and trace, as the handler
 * does, under concurrent streams and a middleware that resumes next() from another request.
 */

let world: CellWorld;
let sdk: TestSdk;
let disable: () => void;
const resume = sharedClientResume();
const ServerSpanMiddleware = serverSpanMiddleware(() => sdk.tracerProvider);

const where = (): string => {
  const ctx = tryGetContext();
  return ctx === undefined ? 'none' : `${ctx.requestId}/${ctx.cellUuid ?? '-'}`;
};

@Controller('stream')
class StreamController {
  constructor(@Inject(Cells) private readonly cells: Cells) {}

  /** Three events, each with a routed count in the targeted cell. */
  @Sse('cell/:cell')
  @TargetCell('cell')
  inCell(): Observable<{ data: unknown }> {
    return interval(5).pipe(
      take(3),
      mergeMap(async () => {
        const before = where();
        const count = await this.cells.getRepository(Widget).count();
        return { data: { before, after: where(), count } };
      }),
    );
  }

  /** Three events, each targeting the first cell itself. */
  @Sse('plain')
  plain(): Observable<{ data: unknown }> {
    return interval(5).pipe(
      take(3),
      mergeMap(async () => {
        await targetCell(world.cells[0]!.mapping, () => this.cells.getRepository(Widget).count());
        return { data: { at: where() } };
      }),
    );
  }
}

@Module({ controllers: [StreamController] })
class StreamModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(ServerSpanMiddleware, CellsContextMiddleware, resume.Middleware).forRoutes(StreamController);
  }
}

beforeAll(async () => {
  disable = enableContext();
  sdk = createTestSdk();
  world = await createCellWorld('nestsse', { cellCount: 2 });
}, 60_000);
afterAll(async () => {
  resume.stop();
  await world?.destroy();
  await sdk?.shutdown();
  disable?.();
});

/** The `data` of each event of an SSE body. */
function eventsOf(body: string): unknown[] {
  return body
    .split('\n')
    .filter((line) => line.startsWith('data:'))
    .map((line) => {
      const data = line.slice(5).trim();
      return data.startsWith('{') ? (JSON.parse(data) as unknown) : data;
    });
}

describe.each(['express', 'fastify'] as const)('an observable handler under %s', (adapter) => {
  let app: INestApplication;
  let base: string;
  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [StreamModule, CellsModule.forRoot({ api: world.api.url, entities: [Widget], telemetry: { tracerProvider: sdk.tracerProvider } })],
    }).compile();
    app = moduleRef.createNestApplication(adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(), { logger: false });
    app.useGlobalFilters(new CellsExceptionFilter());
    await app.listen(0, '127.0.0.1');
    base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  }, 60_000);
  afterAll(async () => {
    await app?.close();
    resume.stop();
  });

  async function get(path: string, requestId: string): Promise<unknown[]> {
    const response = await fetch(`${base}${path}`, { headers: { 'x-request-id': requestId, 'x-roles': 'admin' } });
    return eventsOf(await response.text());
  }

  it('runs the work of an @Sse() stream with @TargetCell in its request and cell, 8 streams at once', async () => {
    const streams = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const cell = world.cells[i % 2]!.mapping;
        return { own: `s${i}/${cell.uuid}`, events: await get(`/stream/cell/${cell.name}`, `s${i}`) };
      }),
    );
    for (const { own, events } of streams) expect(events).toEqual(Array.from({ length: 3 }, () => ({ before: own, after: own, count: 0 })));
  });

  it("puts the library's spans of an @Sse() stream's work in the trace of its own request", async () => {
    await get('/stream/plain', 'first');
    sdk.exporter.reset();
    expect(await get('/stream/plain', 'second')).toEqual(Array.from({ length: 3 }, () => ({ at: 'second/-' })));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const spans = sdk.spans();
    const serverSpan = spans.find((span) => span.name === 'GET second')!;
    const calls = spans.filter((span) => span.instrumentationScope.name === 'typeorm-cells' && span.name.startsWith('count'));
    expect(calls).toHaveLength(3);
    for (const call of calls) expect(call.spanContext().traceId).toBe(serverSpan.spanContext().traceId);
  });
});
