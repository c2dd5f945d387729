import { DataSource } from 'typeorm';
import { targetCell } from '../../lib';
import { createCellWorld } from '../../spec/support/cells';
import { Widget } from '../../spec/support/widget';
import { markdownTable, summarise } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';

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
      if (world.lib.stats().opened !== before + 1) throw new Error('a cold cell must open exactly one DataSource');
      for (let i = 0; i < 50; i++) {
        const t = process.hrtime.bigint();
        await targetCell(cell.mapping, () => widgets.count());
        warmNs.push(Number(process.hrtime.bigint() - t));
      }
      const t = process.hrtime.bigint();
      const plain = new DataSource({ type: 'postgres', url: cell.db.url, entities: [Widget], poolSize: 5 });
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
    return {
      id: 'cold-cell',
      title: '5. Cold cell (100 concurrent first callers)',
      data: { cells: cellCount, callers: CALLERS, rows, opensPerColdCell: 1 },
      markdown: [
        `${cellCount} cells, each hit cold by ${CALLERS} concurrent callers: exactly one DataSource opened per cell.`,
        '',
        markdownTable(['measure', 'median ms', 'p99 ms'], rows.map((r) => [r.name, ms(r.medianUs), ms(r.p99Us)])),
      ].join('\n'),
    };
  } finally {
    await world.destroy();
  }
}

export const scenario: Scenario = { id: 'cold-cell', order: 5, run: coldCell };
