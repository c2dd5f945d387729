import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import { Cells, CellMapping, targetCell } from '../../lib';
import { EmbeddedServer } from '../../dev/embedded-server';
import { createCellWorld } from '../../spec/support/cells';
import { Widget } from '../../spec/support/widget';
import { markdownTable, summarise, type VariantResult } from '../harness';
import { createModelTables, entityModel } from '../support-entity-model';
import type { Scenario, ScenarioResult } from '../scenario';
import { fullGc } from '../support-sampling';

const CALLERS = 100;

/**
 * Scenario 5: the first call to a cell with 100 concurrent callers: one open, and the latency of
 * the first answer against a warm call; a plain TypeORM initialize() + first query for reference.
 */
async function coldCell(quick: boolean): Promise<ScenarioResult> {
  const cellCount = quick ? 2 : 12;
  const world = await createCellWorld('bench_cold', { cellCount, cells: { poolSize: 5 } });
  try {
    const widgets = world.lib.getRepository(Widget);
    const firstAnswerNs: number[] = [];
    const allAnswersNs: number[] = [];
    const warmNs: number[] = [];
    const plainNs: number[] = [];
    for (const cell of world.cells) {
      const before = world.lib.stats().opened;
      const start = process.hrtime.bigint();
      let first = 0n;
      await Promise.all(
        Array.from({ length: CALLERS }, () =>
          targetCell(cell.mapping, () => widgets.count()).then(() => {
            if (first === 0n) first = process.hrtime.bigint();
          }),
        ),
      );
      allAnswersNs.push(Number(process.hrtime.bigint() - start));
      firstAnswerNs.push(Number(first - start));
      if (world.lib.stats().opened !== before + 1)
        throw new Error('a cold cell must open exactly one DataSource');
      for (let i = 0; i < 50; i++) {
        const t = process.hrtime.bigint();
        await targetCell(cell.mapping, () => widgets.count());
        warmNs.push(Number(process.hrtime.bigint() - t));
      }
      const t = process.hrtime.bigint();
      const plain = new DataSource({
        type: 'postgres',
        url: cell.db.url,
        entities: [Widget],
        poolSize: 5,
      });
      await plain.initialize();
      await plain.getRepository(Widget).count();
      plainNs.push(Number(process.hrtime.bigint() - t));
      await plain.destroy();
    }
    const rows = [
      summarise('routed: first answer of 100 concurrent cold callers', firstAnswerNs),
      summarise('routed: all 100 cold callers answered', allAnswersNs),
      summarise('plain TypeORM: new DataSource + initialize() + first query', plainNs),
      summarise('routed: warm call', warmNs),
    ];
    const ms = (us: number) => us / 1000;
    const models = await entityModels(quick);
    return {
      id: 'cold-cell',
      title: '5. Cold cell (100 concurrent first callers)',
      data: {
        cells: cellCount,
        callers: CALLERS,
        rows,
        opensPerColdCell: 1,
        entityModels: models.data,
      },
      markdown: [
        `${cellCount} cells, each hit cold by ${CALLERS} concurrent callers: exactly one DataSource opened per cell.`,
        '',
        markdownTable(
          ['measure', 'median ms', 'p99 ms'],
          rows.map((r) => [r.name, ms(r.medianUs), ms(r.p99Us)]),
        ),
        '',
        models.markdown,
      ].join('\n'),
    };
  } finally {
    await world.destroy();
  }
}

const MODEL_SIZES = [1, 100, 300] as const;

/**
 * Cold opens by entity count, against an embedded PostgreSQL with SCRAM authentication (the
 * handshake no library can remove): for each model, cells opened cold by one caller (routed first
 * answer) interleaved with a plain `new DataSource(...).initialize()` + first query on the same
 * databases, each sample after a full garbage collection. Targets (issue 13): routed 100 entities within 1.1x of routed 1 entity, and at most
 * 0.85x of plain 100 entities.
 */
async function entityModels(
  quick: boolean,
): Promise<{ data: Record<string, unknown>; markdown: string }> {
  const cellCount = quick ? 2 : 8;
  const rounds = quick ? 1 : 3;
  const server = await EmbeddedServer.create({ label: 'bench-cold-models' });
  const rows: VariantResult[] = [];
  const medians = new Map<string, number>();
  try {
    const admin = new DataSource({ type: 'postgres', url: server.url(), poolSize: 1 });
    await admin.initialize();
    try {
      for (const size of MODEL_SIZES) {
        const model = entityModel(size);
        const api = `cold_api_${size}`;
        await admin.query(`CREATE DATABASE "${api}"`);
        const urls: string[] = [];
        for (let i = 0; i < cellCount; i++) {
          await admin.query(`CREATE DATABASE "cold_${size}_${i}"`);
          urls.push(server.url(`cold_${size}_${i}`));
          await createModelTables(urls[i]!, model);
        }
        const routedNs: number[] = [];
        const plainNs: number[] = [];
        for (let round = 0; round < rounds; round++) {
          // A new Cells per round: its cells are cold, its template built once in initialize().
          const lib = new Cells({
            api: server.url(api),
            entities: model.entities,
            migrateApi: round === 0,
            poolSize: 5,
          });
          await lib.initialize();
          try {
            const repo = lib.getRepository(model.first);
            const mappings = lib.getRepository(CellMapping, 'api');
            if (round === 0) {
              for (const [i, url] of urls.entries()) {
                await mappings.save(
                  mappings.create({
                    uuid: randomUUID(),
                    name: `cold-${size}-${i}`,
                    databaseConnection: url,
                  }),
                );
              }
            }
            const cells = await mappings.find({ order: { name: 'ASC' } });
            for (const [i, cell] of cells.entries()) {
              // Each sample starts from a collected heap: a plain 300-entity initialize() leaves
              // tens of MB of garbage that the next sample, of either variant, would pay for.
              fullGc();
              const t = process.hrtime.bigint();
              await targetCell(cell, () => repo.count());
              routedNs.push(Number(process.hrtime.bigint() - t));
              fullGc();
              const p = process.hrtime.bigint();
              const plain = new DataSource({
                type: 'postgres',
                url: urls[i]!,
                entities: model.entities,
                poolSize: 5,
              });
              await plain.initialize();
              await plain.getRepository(model.first).count();
              plainNs.push(Number(process.hrtime.bigint() - p));
              await plain.destroy();
            }
          } finally {
            await lib.destroy();
          }
        }
        for (const [name, samples] of [
          [`routed: first answer of a cold cell, ${size} entities`, routedNs],
          [`plain TypeORM: new DataSource + initialize() + first query, ${size} entities`, plainNs],
        ] as const) {
          const row = summarise(name, samples);
          rows.push(row);
          medians.set(name, row.medianUs);
        }
      }
    } finally {
      await admin.destroy();
    }
  } finally {
    await server.remove();
  }
  const routed = (n: number) => medians.get(`routed: first answer of a cold cell, ${n} entities`)!;
  const plain = (n: number) =>
    medians.get(`plain TypeORM: new DataSource + initialize() + first query, ${n} entities`)!;
  const ratios = {
    routed100OverRouted1: routed(100) / routed(1),
    routed100OverPlain100: routed(100) / plain(100),
    routed300OverRouted1: routed(300) / routed(1),
    routed300OverPlain300: routed(300) / plain(300),
  };
  const met = (ok: boolean): string => (ok ? 'met' : 'missed');
  const ms = (us: number) => us / 1000;
  return {
    data: { cellsPerModel: cellCount, rounds, rows, ratios },
    markdown: [
      `Cold opens by entity count (entities with relations and a soft-delete column), against an embedded PostgreSQL with SCRAM authentication; ${cellCount} cells per model, ${rounds} rounds, one caller, routed and plain interleaved, a full garbage collection before each sample.`,
      '',
      markdownTable(
        ['measure', 'median ms', 'p99 ms'],
        rows.map((r) => [r.name, ms(r.medianUs), ms(r.p99Us)]),
      ),
      '',
      `Target: routed 100 entities within 1.1x of routed 1 entity: ${ratios.routed100OverRouted1.toFixed(2)}x, ${met(ratios.routed100OverRouted1 <= 1.1)}.`,
      `Target: routed 100 entities at most 0.85x of plain 100 entities: ${ratios.routed100OverPlain100.toFixed(2)}x, ${met(ratios.routed100OverPlain100 <= 0.85)}.`,
      `300 entities: routed / routed 1 entity ${ratios.routed300OverRouted1.toFixed(2)}x, routed / plain ${ratios.routed300OverPlain300.toFixed(2)}x.`,
    ].join('\n'),
  };
}

export const scenario: Scenario = { id: 'cold-cell', order: 5, run: coldCell };
