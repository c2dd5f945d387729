import type { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import type { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
import { RequestContext, runWithContext, type Cells, type CellMapping } from '../lib';
import type { RegistryEntry } from '../lib/registry';
import { rowsIn } from '../spec/support/databases';

/** Fills a cell database's widgets table with `rows` rows, one minute apart, for list queries. */
export async function seedWidgets(url: string, cellUuid: string, rows: number): Promise<void> {
  await rowsIn(
    url,
    `INSERT INTO widgets (uuid, name, intended_cell, size, created_at)
     SELECT gen_random_uuid(), 'row-' || g, $1, g, now() - g * interval '1 minute'
     FROM generate_series(1, ${rows}) g`,
    [cellUuid],
  );
  await rowsIn(url, 'ANALYZE widgets');
}

/** The DataSource the registry opened for a cell, and its pg pool: references without routing. */
export interface OpenedCellHandles {
  dataSource: DataSource;
  pool: Pool;
}

/**
 * The registry's own DataSource of `cell` (opened now if needed), so a reference variant uses the
 * very pool and server backends the routed variant uses.
 */
export async function openedCellHandles(lib: Cells, cell: CellMapping): Promise<OpenedCellHandles> {
  return runWithContext(new RequestContext({ cell }), async () => {
    const entry = (await lib.route('main')) as RegistryEntry;
    entry.release();
    const pool = (entry.dataSource.driver as PostgresDriver).master as Pool;
    return { dataSource: entry.dataSource, pool };
  });
}

/** Least-squares slope of `y` against `x`. */
export function slope(points: ReadonlyArray<readonly [number, number]>): number {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}
