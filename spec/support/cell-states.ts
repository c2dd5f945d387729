import { randomUUID } from 'node:crypto';
import { DataSource, type DataSourceOptions, type ObjectLiteral, type Repository } from 'typeorm';
import {
  API_MIGRATIONS,
  CellDisabledError,
  CellReadOnlyError,
  targetCell,
  type CellMapping,
  type CellState,
  type Cells,
} from '../../lib';
import { sleep } from '../../dev/wait';

/**
 * Shared pieces of the cell-state specs (spec/cell-states.spec.ts, spec/mysql/cell-states.spec.ts):
 * how a process is seen to apply a state, a load of routed calls that records each call's outcome,
 * and the API database migrated up to the migration before CellStates.
 */

/** A routed write that changes no row: refused on a read-only cell, a no-op elsewhere. */
function probeWrite(repo: Repository<ObjectLiteral>): Promise<unknown> {
  return repo.update({ uuid: randomUUID() }, { name: 'probe' });
}

/** True when a call in `lib` to `cell` behaves as `state` says (a routed write that changes no row). */
export async function behavesAs(lib: Cells, repo: Repository<ObjectLiteral>, cell: CellMapping, state: CellState): Promise<boolean> {
  try {
    await targetCell(cell, () => probeWrite(repo));
    return state === 'active' || state === 'draining';
  } catch (error) {
    if (error instanceof CellReadOnlyError) return state === 'read-only';
    if (error instanceof CellDisabledError) return state === 'disabled';
    throw error;
  }
}

/**
 * Milliseconds until a call in `lib` to `cell` behaves as `state` says, polling every 2 ms from now.
 * @throws Error after `timeoutMs` (default 5000).
 */
export async function msUntilSeen(
  lib: Cells,
  repo: Repository<ObjectLiteral>,
  cell: CellMapping,
  state: CellState,
  timeoutMs = 5000,
): Promise<number> {
  const started = performance.now();
  while (!(await behavesAs(lib, repo, cell, state))) {
    if (performance.now() - started > timeoutMs) throw new Error(`cell still not ${state} after ${timeoutMs} ms`);
    await sleep(2);
  }
  return performance.now() - started;
}

/** One routed call of a load, and how it ended. */
export interface CallOutcome {
  process: string;
  kind: 'write' | 'read' | 'transaction';
  /** performance.now() as it started and ended. */
  started: number;
  ended: number;
  /** The uuid of the row it wrote (a transaction writes `uuid` and `second`). */
  uuid?: string;
  second?: string;
  /** A transaction whose first write succeeded: it was running. */
  running?: boolean;
  error?: unknown;
}

/** What a load writes: a row of `repo`'s entity meant for `cell`. */
export type RowFor = (cellUuid: string) => ObjectLiteral & { uuid: string };

/** Options of `runLoad`. */
export interface LoadOptions {
  /** The process name each outcome records. */
  process: string;
  lib: Cells;
  repo: Repository<ObjectLiteral>;
  cell: CellMapping;
  row: RowFor;
  writers: number;
  readers: number;
  /** Transactions started one after another, each writing, waiting `holdMs`, writing again. */
  transactions: number;
  holdMs: number;
}

/**
 * Runs routed writes, reads and long transactions on `cell` in `lib` until `stop()` is called;
 * resolves with every call's outcome once the last call has settled.
 */
export function runLoad(options: LoadOptions): { stop(): void; done: Promise<CallOutcome[]> } {
  const { process, lib, repo, cell, row } = options;
  const outcomes: CallOutcome[] = [];
  let stopped = false;
  const record = async (outcome: Omit<CallOutcome, 'started' | 'ended'>, call: (o: CallOutcome) => Promise<unknown>) => {
    const full: CallOutcome = { ...outcome, started: performance.now(), ended: 0 };
    try {
      await targetCell(cell, () => call(full));
    } catch (error) {
      full.error = error;
    }
    full.ended = performance.now();
    outcomes.push(full);
  };
  const loop = async (body: () => Promise<void>) => {
    while (!stopped) {
      await body();
      await sleep(1);
    }
  };
  const loops = [
    ...Array.from({ length: options.writers }, () =>
      loop(() => {
        const value = row(cell.uuid);
        return record({ process, kind: 'write', uuid: value.uuid }, () => repo.insert(value));
      }),
    ),
    ...Array.from({ length: options.readers }, () => loop(() => record({ process, kind: 'read' }, () => repo.count()))),
    ...Array.from({ length: options.transactions }, () =>
      loop(() => {
        const first = row(cell.uuid);
        const second = row(cell.uuid);
        return record({ process, kind: 'transaction', uuid: first.uuid, second: second.uuid }, (outcome) =>
          lib.transaction(async () => {
            await repo.insert(first);
            outcome.running = true;
            await sleep(options.holdMs);
            await repo.insert(second);
          }),
        );
      }),
    ),
  ];
  return {
    stop: () => (stopped = true),
    done: Promise.all(loops).then(() => outcomes),
  };
}

/** Stops `loads` and resolves with every call's outcome once the last call of each has settled. */
export async function stopLoads(loads: ReturnType<typeof runLoad>[]): Promise<CallOutcome[]> {
  for (const load of loads) load.stop();
  return (await Promise.all(loads.map((load) => load.done))).flat();
}

/**
 * The failures of a load that state changes may not cause, each as `process kind: error` or as the
 * error: `unexpected`, a call that failed other than by a state's typed refusal (CellReadOnlyError,
 * CellDisabledError); `runningFailed`, a transaction that failed after its first write went through
 * (it was running at a later change, so it must commit).
 */
export function stateChangeFailures(outcomes: CallOutcome[]): { unexpected: string[]; runningFailed: string[] } {
  const unexpected = outcomes.filter((o) => o.error !== undefined && !(o.error instanceof CellReadOnlyError) && !(o.error instanceof CellDisabledError));
  const runningFailed = outcomes.filter((o) => o.kind === 'transaction' && o.running === true && o.error !== undefined);
  return {
    unexpected: unexpected.map((o) => `${o.process} ${o.kind}: ${String(o.error)}`),
    runningFailed: runningFailed.map((o) => String(o.error)),
  };
}

/**
 * Makes the API database at `url` as it was before cell states (the migrations before CellStates),
 * so a spec can insert old rows and then run CellStates over them.
 */
export async function migrateApiBeforeCellStates(options: { type: 'postgres' | 'mariadb'; url: string }): Promise<void> {
  const before = API_MIGRATIONS.filter((migration) => migration.name !== 'CellStates1768000000000');
  const ds = new DataSource({ ...apiOptions(options), migrations: before } as DataSourceOptions);
  await ds.initialize();
  try {
    await ds.runMigrations({ transaction: 'all' });
  } finally {
    await ds.destroy();
  }
}

/** A DataSource on the API database at `url` with every API migration, for `up` and `undoLastMigration`. */
export function apiMigrationSource(options: { type: 'postgres' | 'mariadb'; url: string }): DataSource {
  return new DataSource({ ...apiOptions(options), migrations: API_MIGRATIONS } as DataSourceOptions);
}

function apiOptions(options: { type: 'postgres' | 'mariadb'; url: string }) {
  // The table name of Cells' own API migrations (apiDataSourceOptions).
  const url = options.url.replace(/^mariadb:/, 'mysql:');
  return { type: options.type, url, entities: [] as string[], migrationsTableName: 'cells_api_migrations' };
}
