import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { Pool } from 'pg';
import { DataSource } from 'typeorm';
import { RequestContext, runWithContext } from '../../lib';
import type { Cells } from '../../lib/cells';
import type { RegistryEntry } from '../../lib/registry';
import { targetCell } from '../../lib/context';
import { createCellWorld } from '../../spec/support/cells';
import { rowsIn } from '../../spec/support/databases';
import { Widget } from '../../spec/support/widget';
import { compare, markdownTable, nsPerCall, runOptions, type VariantResult } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { mapLimit } from '../support-stats';

const ROWS = 10_000;

/**
 * Scenario 1: what routing adds to a primary-key lookup and a small insert, against raw pg and a
 * TypeORM repository of an explicitly chosen DataSource; and the routing step alone.
 */
async function routingOverhead(quick: boolean): Promise<ScenarioResult> {
  // Pool size 1 everywhere: every TypeORM variant then talks to one server backend, so the comparison
  // is not skewed by which backend process (and core) a pool's connection happens to land on.
  const world = await createCellWorld('bench_routing', { cellCount: 1, cells: { poolSize: 1, idleTimeoutMs: Number(process.env.IDLE ?? 300000) } });
  const cell = world.cells[0]!;
  const pool = new Pool({ connectionString: cell.db.url, max: 1 });
  const plain = new DataSource({ type: 'postgres', url: cell.db.url, entities: [Widget], poolSize: 1 });
  try {
    await rowsIn(
      cell.db.url,
      `INSERT INTO widgets (uuid, name, intended_cell, size)
       SELECT gen_random_uuid(), 'row-' || g, $1, g FROM generate_series(1, ${ROWS}) g`,
      [cell.mapping.uuid],
    );
    await rowsIn(cell.db.url, 'ANALYZE widgets');
    const uuids = (await rowsIn<{ uuid: string }>(cell.db.url, 'SELECT uuid FROM widgets')).map((r) => r.uuid);
    await plain.initialize();
    const otherRepo = plain.getRepository(Widget);
    const routed = world.lib.getRepository(Widget);
    const ctx = new RequestContext({ cell: cell.mapping });
    // The baseline is a plain TypeORM repository of the very DataSource the registry opened for
    // the cell: the same pool and backend, so the ratio isolates what routing adds.
    const plainRepo = await runWithContext(ctx, async () => {
      await routed.count();
      const entry = world.lib.route('main') as RegistryEntry;
      entry.release();
      return entry.dataSource.getRepository(Widget);
    });
    let i = 0;
    const nextUuid = () => uuids[(i = (i + 7919) % uuids.length)]!;
    // A request of the example app, minus HTTP: a new context, then the instance's cell looked up
    // in the mapping cache (instances mapped in the API database, all cached) and the lookup routed.
    const mapped = uuids.slice(0, quick ? 200 : 2_000);
    await mapLimit(mapped, 8, (instanceUuid) =>
      world.lib.mappings.mapInstance({ instanceUuid, cell: cell.mapping, projectId: 'bench' }),
    );
    for (const instanceUuid of mapped) await world.lib.mappings.instanceCell(instanceUuid);
    let m = 0;
    const nextMapped = () => mapped[(m = (m + 7919) % mapped.length)]!;
    const bare = new AsyncLocalStorage<object>();
    const sql = 'SELECT "uuid", "name", "intended_cell", "size", "created_at", "deleted_at" FROM "widgets" WHERE "uuid" = $1 AND "deleted_at" IS NULL LIMIT 1';
    const options = runOptions(quick);
    const lookups = await runWithContext(ctx, () =>
      compare(
        {
          'raw pg': () => pool.query(sql, [nextUuid()]),
          'TypeORM, explicit DataSource': () => plainRepo.findOneBy({ uuid: nextUuid() }),
          'TypeORM, a second DataSource': () => otherRepo.findOneBy({ uuid: nextUuid() }),
          'routed, in a context': () => routed.findOneBy({ uuid: nextUuid() }),
          'routed, targetCell per call': () => targetCell(cell.mapping, () => routed.findOneBy({ uuid: nextUuid() })),
          'TypeORM in a bare AsyncLocalStorage.run per call': () =>
            bare.run({}, () => plainRepo.findOneBy({ uuid: nextUuid() })),
          'routed, a request: new RequestContext + targetInstanceCell': () => {
            const uuid = nextMapped();
            return runWithContext(new RequestContext({ projectId: 'bench' }), () =>
              world.lib.targetInstanceCell(uuid, () => routed.findOneBy({ uuid })),
            );
          },
        },
        'TypeORM, explicit DataSource',
        options,
      ),
    );
    const row = () => ({ uuid: randomUUID(), name: 'bench', intendedCell: cell.mapping.uuid, size: 1 });
    const inserts = await runWithContext(ctx, () =>
      compare(
        {
          'raw pg': () => {
            const r = row();
            return pool.query('INSERT INTO widgets (uuid, name, intended_cell, size) VALUES ($1, $2, $3, $4)', [r.uuid, r.name, r.intendedCell, r.size]);
          },
          'TypeORM, explicit DataSource': () => plainRepo.insert(row()),
          'TypeORM, a second DataSource': () => otherRepo.insert(row()),
          'routed, in a context': () => routed.insert(row()),
          'routed, targetCell per call': () => targetCell(cell.mapping, () => routed.insert(row())),
        },
        'TypeORM, explicit DataSource',
        options,
      ),
    );
    const step = routingStepNs(world.lib, ctx, quick);
    const lookupRatio = lookups.find((r) => r.name === 'routed, in a context')!.ratio;
    const insertRatio = inserts.find((r) => r.name === 'routed, in a context')!.ratio;
    const requestRatio = lookups.find((r) => r.name.startsWith('routed, a request'))!.ratio;
    const bareRatio = lookups.find((r) => r.name.startsWith('TypeORM in a bare'))!.ratio;
    const table = (rows: VariantResult[]) =>
      markdownTable(['variant', 'median µs', 'p99 µs', 'ratio to TypeORM'], rows.map((r) => [r.name, r.medianUs, r.p99Us, r.ratio]));
    return {
      id: 'routing',
      title: '1. Routing overhead (10,000-row table)',
      data: { lookups, inserts, routingStepNs: step, requestRatio, bareRatio, targets: { routedOverPlainMedian: 1.02, routingStepNs: 1000 } },
      markdown: [
        'Baseline: a plain TypeORM repository of the same DataSource the registry opened for the cell (pool size 1, so every TypeORM variant uses one server backend); "a second DataSource" is an independent one, showing how much two equal DataSources differ on this machine.',
        '',
        'Primary-key lookup (`findOneBy({ uuid })`):',
        '',
        table(lookups),
        '',
        'Small insert (`insert(row)`):',
        '',
        table(inserts),
        '',
        `Routing step alone (context lookup + registry hit + lease release): **${step.toFixed(0)} ns** per call (target < 1,000 ns).`,
        `Routed / plain TypeORM by median: lookup **${lookupRatio.toFixed(3)}**, insert **${insertRatio.toFixed(3)}** (target ≤ 1.02).`,
        `A whole request's share of the library (new context, cached instance lookup, routed lookup): **${requestRatio.toFixed(3)}** of the plain lookup, against ${bareRatio.toFixed(3)} for the plain lookup in a bare \`AsyncLocalStorage.run\` (what the runtime's context costs by itself on ${process.version}).`,
      ].join('\n'),
    };
  } finally {
    await pool.end();
    if (plain.isInitialized) await plain.destroy();
    await world.destroy();
  }
}

function routingStepNs(cells: Cells, ctx: RequestContext, quick: boolean): number {
  return runWithContext(ctx, () => {
    const route = () => {
      const r = cells.route('main');
      if (r instanceof Promise) throw new Error('the cell should be open');
      r.release();
    };
    return nsPerCall(route, quick ? 10_000 : 1_000_000);
  });
}

export const scenario: Scenario = { id: 'routing', order: 1, run: routingOverhead };
