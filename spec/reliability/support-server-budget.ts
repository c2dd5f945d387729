import { Cells, maskSecrets, type CellsOptions } from '../../lib';
import { Widget } from '../support/widget';

/**
 * The layout of issue 13, item 2, shared by spec/reliability/server-budget.spec.ts and
 * bench/scenarios/server-budget.ts: `cells` CellMappings over `databases` databases of one server
 * started with max_connections = `serverMaxConnections` (spec/support/second-server.ts), pools of
 * `poolSize`, `maxOpenCells` open at once (up to 320 connections wanted), `tasks` concurrent tasks
 * over all cells; the budget under test is `budget`.
 */
export const SERVER_BUDGET_LAYOUT = {
  cells: 200,
  /** Real databases: mapping i points at database i mod `databases` (the registry keys by uuid). */
  databases: 8,
  tasks: 256,
  poolSize: 5,
  maxOpenCells: 64,
  budget: 40,
  serverMaxConnections: 60,
} as const;

/** An initialised Cells over the API database at `apiUrl` with the layout's pools, routing Widget; `options` on top. */
export function openBudgetCells(apiUrl: string, options: Partial<CellsOptions>): Promise<Cells> {
  return new Cells({
    api: { url: apiUrl, poolSize: 3 },
    entities: [Widget],
    poolSize: SERVER_BUDGET_LAYOUT.poolSize,
    maxOpenCells: SERVER_BUDGET_LAYOUT.maxOpenCells,
    ...options,
  }).initialize();
}

/** A failed call's error as `name: message`, secrets masked. */
export function failedCallText(error: unknown): string {
  return maskSecrets(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
}
