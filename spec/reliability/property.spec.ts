import { randomBytes, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { Pool } from 'pg';
import type { SelectQueryBuilder } from 'typeorm';
import {
  CellSwitchInTransactionError,
  CellsError,
  RequestContext,
  getContext,
  runWithContext,
  setTargetCell,
  targetCell,
  tryGetContext,
  type CellRef,
  type ReadDeleted,
} from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { adminQuery, rowsIn, testDatabaseUrl } from '../support/databases';
import { countConnectionsInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from './support-load';
import { withTimeout } from '../../dev/wait';

// Scenario 4: random programs of nested targetCell / setTargetCell / cells.transaction / throw /
// await / runWithContext run against a real Cells with three cells, and a pure model predicts the
// context (cell, readDeleted, in-transaction) at every point, every error, the database (and the
// transaction) each routed query reaches and which transaction writes survive. Programs also share
// query builders (one per run, and clones of it) between parallel branches on different cells, in
// and out of transactions; run nested transactions in parallel (Promise.allSettled, some throwing);
// and schedule work (a timer, a cells.bind callback) that runs after its transaction has ended.
// After every run no pooled connection may be left inside a transaction. A second property reads
// routed streams while other branches force their cells out of a world with maxOpenCells 2.

const SCENARIO = '4 context property';

/** A cell a step names: one of the three cells, none (untargeted), an unmapped uuid, or a malformed one. */
type CellChoice = 0 | 1 | 2 | null | 'unknown' | 'bad';
type AwaitKind = 'micro' | 'tick' | 'immediate' | 'timer';
/**
 * How a step uses the run's shared builder: `raw` runs it, `clone` runs the clone made with it,
 * `fresh` runs a clone made now, `count` counts its rows (which shows the readDeleted mode applied).
 */
type SharedUse = 'raw' | 'clone' | 'fresh' | 'count';

/** One step of a program. Scoped steps run a body; `parallel` runs scoped steps at once. */
type Step =
  | { op: 'target'; cell: CellChoice; body: Step[] }
  | { op: 'context'; cell: 0 | 1 | 2 | null; mode: ReadDeleted; body: Step[] }
  | { op: 'transaction'; body: Step[] }
  | { op: 'try'; body: Step[] }
  | { op: 'parallel'; branches: Step[] }
  | { op: 'set'; cell: CellChoice }
  | { op: 'readDeleted'; mode: ReadDeleted | 'maybe' }
  | { op: 'query' }
  | { op: 'shared'; use: SharedUse }
  /** Nested (or, outside a transaction, independent) transactions started together, allSettled. */
  | { op: 'settle'; branches: Step[][] }
  /** Work scheduled now that runs once the program (and so every transaction of it) has ended. */
  | { op: 'later'; via: 'timer' | 'bind'; work: Step }
  | { op: 'throw' }
  | { op: 'await'; kind: AwaitKind };

/** A program runs in a fresh context (`runWithContext`) or in none at all. */
interface Program {
  root: { cell: 0 | 1 | 2 | null; mode: ReadDeleted } | null;
  body: Step[];
}

/** What a run shows: a label at every observed point, and the transaction writes that landed. */
interface Trace {
  points: Record<string, string>;
  widgets: string[];
}

// ---------------------------------------------------------------------------------------------
// Generators

const cellChoice: fc.Arbitrary<CellChoice> = fc.oneof(
  { arbitrary: fc.constantFrom<CellChoice>(0, 1, 2), weight: 6 },
  { arbitrary: fc.constant<CellChoice>(null), weight: 2 },
  { arbitrary: fc.constantFrom<CellChoice>('unknown', 'bad'), weight: 1 },
);
const realCell = fc.constantFrom<0 | 1 | 2 | null>(0, 1, 2, 0, 1, 2, null);
const mode = fc.constantFrom<ReadDeleted>('no', 'yes', 'only');
const sharedStep: fc.Arbitrary<Step> = fc.record({
  op: fc.constant('shared' as const),
  use: fc.constantFrom<SharedUse>('raw', 'clone', 'fresh', 'count'),
});
const queryStep: fc.Arbitrary<Step> = fc.record({ op: fc.constant('query' as const) });
const throwStep: fc.Arbitrary<Step> = fc.record({ op: fc.constant('throw' as const) });
/** What late work does: read, run the shared builder, or open a transaction of its own. */
const lateWork: fc.Arbitrary<Step> = fc.oneof(
  queryStep,
  sharedStep,
  fc.record({
    op: fc.constant('transaction' as const),
    body: fc.array(fc.oneof({ arbitrary: sharedStep, weight: 3 }, { arbitrary: throwStep, weight: 1 }), {
      maxLength: 2,
    }),
  }),
);

const leaf: fc.Arbitrary<Step> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant('await' as const),
      kind: fc.constantFrom<AwaitKind>('micro', 'tick', 'immediate', 'timer'),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ op: fc.constant('set' as const), cell: cellChoice }), weight: 3 },
  {
    arbitrary: fc.record({
      op: fc.constant('readDeleted' as const),
      mode: fc.constantFrom<ReadDeleted | 'maybe'>('no', 'yes', 'only', 'maybe'),
    }),
    weight: 2,
  },
  { arbitrary: queryStep, weight: 2 },
  { arbitrary: sharedStep, weight: 3 },
  {
    arbitrary: fc.record({
      op: fc.constant('later' as const),
      via: fc.constantFrom<'timer' | 'bind'>('timer', 'bind'),
      work: lateWork,
    }),
    weight: 2,
  },
  { arbitrary: throwStep, weight: 1 },
);

const { step } = fc.letrec<{ step: Step; scoped: Step; body: Step[] }>((tie) => ({
  step: fc.oneof(
    { maxDepth: 4, depthSize: 'small', depthIdentifier: 'program' },
    { arbitrary: leaf, weight: 5 },
    { arbitrary: tie('scoped'), weight: 3 },
    {
      arbitrary: fc.record({ op: fc.constant('transaction' as const), body: tie('body') }),
      weight: 3,
    },
    { arbitrary: fc.record({ op: fc.constant('try' as const), body: tie('body') }), weight: 2 },
    {
      arbitrary: fc.record({
        op: fc.constant('settle' as const),
        branches: fc.array(tie('body'), { minLength: 2, maxLength: 3 }),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constant('parallel' as const),
        branches: fc.array(tie('scoped'), { minLength: 2, maxLength: 3 }),
      }),
      weight: 1,
    },
  ),
  scoped: fc.oneof(
    fc.record({ op: fc.constant('target' as const), cell: cellChoice, body: tie('body') }),
    fc.record({ op: fc.constant('context' as const), cell: realCell, mode, body: tie('body') }),
  ),
  body: fc.array(tie('step'), { maxLength: 4, depthIdentifier: 'program' }),
}));

const program: fc.Arbitrary<Program> = fc
  .record({
    root: fc.option(fc.record({ cell: realCell, mode }), { freq: 4 }),
    body: fc.array(step, { minLength: 1, maxLength: 5 }),
  })
  // Bounded so that concurrent programs never wait for each other's pool connections forever.
  .filter((p) => connectionsNeeded(p.body, false) <= MAX_CONNECTIONS_PER_PROGRAM);

const MAX_CONNECTIONS_PER_PROGRAM = 2;
const CONCURRENT_PROGRAMS = 3;
/** Enough for every concurrent program to hold its bound on the same cell. */
const POOL_SIZE = MAX_CONNECTIONS_PER_PROGRAM * CONCURRENT_PROGRAMS;

/** An upper bound on the pool connections a run of `steps` holds at once. */
function connectionsNeeded(steps: readonly Step[], inTransaction: boolean): number {
  return Math.max(0, ...steps.map((s) => stepConnections(s, inTransaction)));
}

function stepConnections(s: Step, inTransaction: boolean): number {
  switch (s.op) {
    case 'transaction':
      return (inTransaction ? 0 : 1) + connectionsNeeded(s.body, true);
    case 'query':
    case 'shared':
      return inTransaction ? 0 : 1;
    case 'settle':
      // Outside a transaction each branch is a transaction of its own, all open at once.
      return s.branches.reduce(
        (sum, body) => sum + (inTransaction ? 0 : 1) + connectionsNeeded(body, true),
        0,
      );
    case 'parallel':
      return s.branches.reduce((sum, b) => sum + stepConnections(b, inTransaction), 0);
    case 'target':
    case 'try':
      return connectionsNeeded(s.body, inTransaction);
    case 'context':
      return connectionsNeeded(s.body, false);
    // Late work runs one job at a time after the program, on at most one connection.
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// The model: a pure interpreter over model contexts, mirroring the documented semantics.

type ModelCell = 0 | 1 | 2 | 'unknown' | null;

/**
 * A transaction's connection: its cell, the outermost transaction (which names its database
 * transaction id) and the innermost transaction (or savepoint) open on it.
 */
interface ModelConnection {
  cell: 0 | 1 | 2;
  root: string;
  innermost: string;
}

interface ModelContext {
  cell: ModelCell;
  mode: string;
  tx: ModelConnection | null;
  /** Late work whose context was inside a transaction that has ended since. */
  txEnded?: boolean;
}

/** Whether targeting another cell throws in `ctx`: only inside a running transaction. */
const switchRefused = (ctx: ModelContext): boolean => ctx.tx !== null;

class ModelError {
  constructor(readonly code: string) {}
}

function cellLabel(cell: ModelCell): string {
  return cell === null ? 'main' : cell === 'unknown' ? 'unknown' : `c${cell}`;
}

/** Marker rows in cell i: i + 1 live ones, 10 * (i + 1) soft-deleted ones; the shared builder reads them. */
const liveMarkers = (cell: 0 | 1 | 2): number => cell + 1;
const deletedMarkers = (cell: 0 | 1 | 2): number => 10 * (cell + 1);

/** How many marker rows a count in `cell` under readDeleted `mode` sees. */
function markersSeen(cell: 0 | 1 | 2, mode: string): number {
  if (mode === 'only') return deletedMarkers(cell);
  return liveMarkers(cell) + (mode === 'yes' ? deletedMarkers(cell) : 0);
}

/** Predicts the trace of `p` run under tag `tag`. */
function predict(p: Program, tag: string): Trace {
  const points: Record<string, string> = {};
  const parentOf = new Map<string, string | null>();
  const writes: Array<{ path: string; cell: 0 | 1 | 2 }> = [];
  const failed = new Set<string>();
  /** Late work: the context object it was scheduled in (read when it runs, after the program). */
  const deferred: Array<{ path: string; work: Step; ctx: ModelContext | undefined }> = [];

  const see = (key: string, ctx: ModelContext | undefined) => {
    points[key] =
      ctx === undefined
        ? 'none'
        : `${cellLabel(ctx.cell)}/${ctx.mode}/${switchRefused(ctx) ? 'tx' : '-'}`;
  };
  const retarget = (ctx: ModelContext, choice: CellChoice) => {
    if (choice === 'bad') throw new ModelError('CELLS_INVALID_ARGUMENT');
    if (switchRefused(ctx) && choice !== ctx.cell)
      throw new ModelError('CELLS_CELL_SWITCH_IN_TRANSACTION');
    ctx.cell = choice;
  };
  const steps = (list: readonly Step[], path: string, ctx: ModelContext | undefined) => {
    list.forEach((s, i) => run(s, `${path}.${i}`, ctx));
  };
  /** The database (and transaction) a routed read of `ctx` reaches. */
  const reached = (ctx: ModelContext | undefined): string => {
    if (ctx === undefined) throw new ModelError('CELLS_NO_CONTEXT');
    const cell = ctx.tx?.cell ?? ctx.cell;
    if (cell === null) throw new ModelError('CELLS_NO_TARGET_CELL');
    if (cell === 'unknown') throw new ModelError('CELLS_UNKNOWN_CELL');
    return ctx.tx ? `${cellLabel(cell)}@${ctx.tx.root}` : cellLabel(cell);
  };
  const run = (s: Step, path: string, ctx: ModelContext | undefined): void => {
    see(`${path}:in`, ctx);
    switch (s.op) {
      case 'target': {
        const next: ModelContext = ctx ? { ...ctx } : { cell: null, mode: 'no', tx: null };
        retarget(next, s.cell);
        see(`${path}:body`, next);
        steps(s.body, path, next);
        break;
      }
      case 'context': {
        const next: ModelContext = { cell: s.cell, mode: s.mode, tx: null };
        see(`${path}:body`, next);
        steps(s.body, path, next);
        break;
      }
      case 'transaction': {
        if (ctx === undefined) throw new ModelError('CELLS_NO_CONTEXT');
        let inner: ModelContext;
        if (ctx.tx !== null) {
          // A nested transaction is a savepoint on the same connection, in a copy of the context.
          inner = { ...ctx };
          parentOf.set(path, ctx.tx.innermost);
        } else {
          if (ctx.cell === null) throw new ModelError('CELLS_NO_TARGET_CELL');
          if (ctx.cell === 'unknown') throw new ModelError('CELLS_UNKNOWN_CELL');
          inner = { ...ctx, tx: { cell: ctx.cell, root: path, innermost: path } };
          parentOf.set(path, null);
        }
        const connection = inner.tx!;
        const outer = connection.innermost;
        connection.innermost = path;
        see(`${path}:body`, inner);
        points[`${path}:db`] = `${cellLabel(connection.cell)}@${connection.root}`;
        writes.push({ path, cell: connection.cell });
        try {
          steps(s.body, path, inner);
        } catch (error) {
          failed.add(path);
          throw error;
        } finally {
          connection.innermost = outer;
        }
        break;
      }
      case 'try': {
        let caught = 'none';
        try {
          steps(s.body, path, ctx);
        } catch (error) {
          caught = (error as ModelError).code;
        }
        points[`${path}:caught`] = caught;
        break;
      }
      case 'parallel': {
        const errors: ModelError[] = [];
        s.branches.forEach((b, i) => {
          try {
            run(b, `${path}.${i}`, ctx);
          } catch (error) {
            errors.push(error as ModelError);
          }
        });
        if (errors[0]) throw errors[0];
        break;
      }
      case 'set':
        if (ctx === undefined) throw new ModelError('CELLS_NO_CONTEXT');
        retarget(ctx, s.cell);
        break;
      case 'readDeleted':
        if (ctx === undefined) throw new ModelError('CELLS_NO_CONTEXT');
        if (s.mode === 'maybe') throw new ModelError('CELLS_INVALID_ARGUMENT');
        ctx.mode = s.mode;
        break;
      case 'query':
        points[`${path}:db`] = reached(ctx);
        break;
      case 'shared': {
        const at = reached(ctx);
        const cell = (ctx!.tx?.cell ?? ctx!.cell) as 0 | 1 | 2;
        // Each execution applies the readDeleted mode of its own context, and only to itself.
        points[`${path}:db`] = s.use === 'count' ? `n=${markersSeen(cell, ctx!.mode)}` : at;
        break;
      }
      case 'settle':
        // Run one at a time on their connection: only the ones that throw roll back.
        s.branches.forEach((body, i) => {
          let outcome = 'ok';
          try {
            run({ op: 'transaction', body }, `${path}.${i}`, ctx);
          } catch (error) {
            outcome = (error as ModelError).code;
          }
          points[`${path}.${i}:settled`] = outcome;
        });
        break;
      case 'later':
        deferred.push({ path: `${path}~`, work: s.work, ctx });
        break;
      case 'throw':
        throw new ModelError(`THROWN ${path}`);
      case 'await':
        break;
    }
    see(`${path}:out`, ctx);
  };

  let end = 'ok';
  try {
    steps(p.body, 'p', p.root ? { cell: p.root.cell, mode: p.root.mode, tx: null } : undefined);
  } catch (error) {
    end = (error as ModelError).code;
  }
  points['end'] = end;
  // Late work runs after every transaction ended: in its context's cell, outside any transaction.
  for (const job of deferred) {
    let outcome = 'ok';
    try {
      run(job.work, job.path, job.ctx && { ...job.ctx, tx: null, txEnded: job.ctx.tx !== null });
    } catch (error) {
      outcome = (error as ModelError).code;
    }
    points[`${job.path}:late`] = outcome;
  }
  points['after'] = 'none';
  const survives = (path: string | null): boolean =>
    path === null || (!failed.has(path) && survives(parentOf.get(path) ?? null));
  const widgets = writes.filter((w) => survives(w.path)).map((w) => `${tag}${w.path}@c${w.cell}`);
  return { points, widgets: widgets.sort() };
}

// ---------------------------------------------------------------------------------------------
// The real run.

class ProgramThrow extends Error {
  constructor(readonly at: string) {
    super(`thrown by the program at ${at}`);
  }
}

/** Never mapped: routing to it must fail with UnknownCellError. */
const UNKNOWN_CELL = randomUUID();
/** Targeted by the in-transaction probe; never the current cell. */
const PROBE_CELL = randomUUID();

/** The name of the marker rows the shared builder reads. */
const MARKER = 'marker';

let world: CellWorld;
let checkPools: Pool[] = [];
/** One connection to the server's `postgres` database, for pg_stat_activity after every run. */
let admin: Pool;
let programsRun = 0;
let mismatches = 0;
/** Pooled connections of the cells found idle inside a transaction once a run had settled. */
let leftInTransaction = 0;
/** Transaction writes found in the cells, and the error codes programs ended or caught with: coverage. */
let landedTotal = 0;
const seenOutcomes = new Set<string>();

beforeAll(async () => {
  world = await createCellWorld('prop', { cellCount: 3, cells: { poolSize: POOL_SIZE } });
  checkPools = world.cells.map((c) => new Pool({ connectionString: c.db.url, max: 1 }));
  admin = new Pool({ connectionString: testDatabaseUrl('postgres'), max: 1 });
  for (const [i, pool] of checkPools.entries()) {
    const cell = i as 0 | 1 | 2;
    await pool.query(
      `INSERT INTO widgets (uuid, name, intended_cell, deleted_at)
       SELECT gen_random_uuid(), $1, $2, CASE WHEN n > $3 THEN now() END
         FROM generate_series(1, $4::int) AS n`,
      [MARKER, world.cells[i]!.mapping.uuid, liveMarkers(cell), liveMarkers(cell) + deletedMarkers(cell)],
    );
  }
}, 60_000);

afterAll(async () => {
  await Promise.all([...checkPools, admin].map((p) => p?.end()));
  await world?.destroy();
});

function cellRef(choice: CellChoice): CellRef | null {
  if (choice === null) return null;
  if (choice === 'bad') return 'not-a-cell-uuid';
  if (choice === 'unknown') return UNKNOWN_CELL;
  // Both forms a caller may pass: the mapping, or its uuid.
  const mapping = world.cells[choice]!.mapping;
  return choice === 1 ? mapping.uuid : mapping;
}

function labelOfUuid(uuid: string | null): string {
  if (uuid === null) return 'main';
  if (uuid === UNKNOWN_CELL) return 'unknown';
  const index = world.cells.findIndex((c) => c.mapping.uuid === uuid);
  return index < 0 ? `other ${uuid}` : `c${index}`;
}

function labelOfDatabase(name: string): string {
  const index = world.cells.findIndex((c) => c.db.name === name);
  return index < 0 ? `other database ${name}` : `c${index}`;
}

/** Whether the active context is inside a transaction: only there does targeting another cell throw. */
function inTransaction(): boolean {
  try {
    targetCell(PROBE_CELL, () => undefined);
    return false;
  } catch (error) {
    if (error instanceof CellSwitchInTransactionError) return true;
    throw error;
  }
}

function snapshot(): string {
  const ctx = tryGetContext();
  if (ctx === undefined) return 'none';
  return `${labelOfUuid(ctx.cellUuid)}/${ctx.readDeleted}/${inTransaction() ? 'tx' : '-'}`;
}

function codeOf(error: unknown): string {
  if (error instanceof ProgramThrow) return `THROWN ${error.at}`;
  if (error instanceof CellsError) return error.code;
  return `untyped ${String(error)}`;
}

function pause(kind: AwaitKind): Promise<void> {
  switch (kind) {
    case 'micro':
      return Promise.resolve();
    case 'tick':
      return new Promise((resolve) => process.nextTick(resolve));
    case 'immediate':
      return new Promise((resolve) => setImmediate(resolve));
    case 'timer':
      return new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** The builders a run shares between its programs and their branches, made outside any context. */
interface SharedBuilders {
  base: SelectQueryBuilder<Widget>;
  clone: SelectQueryBuilder<Widget>;
}

function sharedBuilders(): SharedBuilders {
  const base = world.lib
    .getRepository(Widget)
    .createQueryBuilder('w')
    .select('current_database()', 'db')
    .addSelect('txid_current_if_assigned()::text', 'tx')
    .where('w.name = :marker', { marker: MARKER });
  return { base, clone: base.clone() };
}

/** Features of the programs that really ran, to show the generator reaches them. */
const coverage = { shared: 0, settled: 0, settledRolledBack: 0, late: 0, lateInTransaction: 0 };

async function execute(p: Program, tag: string, builders: SharedBuilders): Promise<Trace> {
  const points: Record<string, string> = {};
  const widgets = world.lib.getRepository(Widget);
  /** Database transaction ids seen, by the path of the outermost program transaction that owns each. */
  const transactionOf = new Map<string, string>();
  const see = (key: string) => {
    points[key] = snapshot();
  };
  const reachedLabel = (row: { db?: string; tx?: string | null } | undefined): string => {
    if (row === undefined) return 'no row';
    const db = labelOfDatabase(row.db ?? '');
    if (row.tx === null || row.tx === undefined) return db;
    return `${db}@${transactionOf.get(row.tx) ?? `another transaction ${row.tx}`}`;
  };
  const reachedRow = async () => {
    const rows = (await widgets.query(
      'SELECT current_database() AS db, txid_current_if_assigned()::text AS tx',
    )) as Array<{ db: string; tx: string | null }>;
    return rows[0];
  };
  const sharedRead = async (use: SharedUse): Promise<string> => {
    coverage.shared++;
    switch (use) {
      case 'raw':
        return reachedLabel(await builders.base.getRawOne());
      case 'clone':
        return reachedLabel(await builders.clone.getRawOne());
      case 'fresh':
        return reachedLabel(await builders.base.clone().getRawOne());
      case 'count':
        return `n=${await builders.base.getCount()}`;
    }
  };

  // Late work waits for the program to end, then runs one job at a time, each in its own context.
  let programEnded!: () => void;
  let lateQueue: Promise<void> = new Promise<void>((resolve) => (programEnded = resolve));
  const lateTimers: Array<Promise<void>> = [];
  const lateBound: Array<() => Promise<void>> = [];
  const runLate = async (work: Step, path: string): Promise<void> => {
    coverage.late++;
    let outcome = 'ok';
    try {
      await run(work, path);
    } catch (error) {
      outcome = codeOf(error);
    }
    points[`${path}:late`] = outcome;
  };

  const steps = async (list: readonly Step[], path: string) => {
    for (const [i, s] of list.entries()) await run(s, `${path}.${i}`);
  };
  const run = async (s: Step, path: string): Promise<void> => {
    see(`${path}:in`);
    switch (s.op) {
      case 'target':
        await targetCell(cellRef(s.cell), async () => {
          see(`${path}:body`);
          await steps(s.body, path);
        });
        break;
      case 'context': {
        const ctx = new RequestContext({ readDeleted: s.mode, cell: cellRef(s.cell) });
        await runWithContext(ctx, async () => {
          see(`${path}:body`);
          await steps(s.body, path);
        });
        break;
      }
      case 'transaction':
        await world.lib.transaction(async () => {
          see(`${path}:body`);
          await widgets.insert({
            uuid: randomUUID(),
            name: `${tag}${path}`,
            intendedCell: getContext().cellUuid ?? '',
          });
          // The insert gave the database transaction an id; the outermost program transaction owns it.
          const row = await reachedRow();
          if (row?.tx && !transactionOf.has(row.tx)) transactionOf.set(row.tx, path);
          points[`${path}:db`] = reachedLabel(row);
          await steps(s.body, path);
        });
        break;
      case 'try': {
        let caught = 'none';
        try {
          await steps(s.body, path);
        } catch (error) {
          caught = codeOf(error);
        }
        points[`${path}:caught`] = caught;
        break;
      }
      case 'parallel': {
        // Also inside a transaction: its nested transactions take turns on the connection.
        const settled = await Promise.allSettled(s.branches.map((b, i) => run(b, `${path}.${i}`)));
        const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failure) throw failure.reason;
        break;
      }
      case 'settle': {
        const settled = await Promise.allSettled(
          s.branches.map((body, i) => run({ op: 'transaction', body }, `${path}.${i}`)),
        );
        for (const [i, r] of settled.entries()) {
          points[`${path}.${i}:settled`] = r.status === 'fulfilled' ? 'ok' : codeOf(r.reason);
          coverage.settled++;
          if (r.status === 'rejected') coverage.settledRolledBack++;
        }
        break;
      }
      case 'later': {
        const latePath = `${path}~`;
        if (inTransaction()) coverage.lateInTransaction++;
        if (s.via === 'bind') {
          lateBound.push(world.lib.bind(() => runLate(s.work, latePath)));
        } else {
          lateTimers.push(
            new Promise<void>((resolve) =>
              setTimeout(() => {
                // Chained from the timer callback, so the job runs in the timer's context.
                lateQueue = lateQueue.then(() => runLate(s.work, latePath));
                void lateQueue.then(resolve);
              }, 0),
            ),
          );
        }
        break;
      }
      case 'set':
        setTargetCell(getContext(), cellRef(s.cell));
        break;
      case 'readDeleted':
        getContext().readDeleted = s.mode as ReadDeleted;
        break;
      case 'query':
        points[`${path}:db`] = reachedLabel(await reachedRow());
        break;
      case 'shared':
        points[`${path}:db`] = await sharedRead(s.use);
        break;
      case 'throw':
        throw new ProgramThrow(path);
      case 'await':
        await pause(s.kind);
        break;
    }
    see(`${path}:out`);
  };

  let end = 'ok';
  try {
    const body = () => steps(p.body, 'p');
    if (p.root === null) await body();
    else
      await runWithContext(
        new RequestContext({ readDeleted: p.root.mode, cell: cellRef(p.root.cell) }),
        body,
      );
  } catch (error) {
    end = codeOf(error);
  }
  points['end'] = end;
  programEnded();
  await Promise.all(lateTimers);
  // Bound callbacks are called from an unrelated context: the one they were bound in must win.
  await runWithContext(new RequestContext({ cell: world.cells[2]!.mapping }), async () => {
    for (const job of lateBound) await job();
  });
  points['after'] = snapshot();
  return { points, widgets: [] };
}

/** The widgets of the programs tagged `${runTag}/…`, as `name@cell`, read with plain pg clients. */
async function landedWidgets(runTag: string): Promise<string[]> {
  const found: string[] = [];
  for (const [i, pool] of checkPools.entries()) {
    const { rows } = await pool.query<{ name: string }>(
      'SELECT name FROM widgets WHERE name LIKE $1',
      [`${runTag}/%`],
    );
    for (const row of rows) found.push(`${row.name}@c${i}`);
  }
  return found.sort();
}

/** Runs `programs` at once and checks each against its model; counts every mismatch. */
async function checkPrograms(programs: readonly Program[]): Promise<void> {
  const runTag = `r${randomBytes(5).toString('hex')}`;
  const tags = programs.map((_, i) => `${runTag}/${i}/`);
  // One builder (and one clone of it) for every program and branch of the run.
  const builders = sharedBuilders();
  const traces = await withTimeout(
    Promise.all(programs.map((p, i) => execute(p, tags[i]!, builders))),
    20_000,
    'a run',
  );
  const landed = await landedWidgets(runTag);
  const inTransactionNow = await countConnectionsInTransaction(
    admin,
    world.cells.map((c) => c.db.name),
  );
  const actual = {
    programs: traces.map((t) => t.points),
    widgets: landed,
    connectionsInTransaction: inTransactionNow,
  };
  const expectedTraces = programs.map((p, i) => predict(p, tags[i]!));
  const expected = {
    programs: expectedTraces.map((t) => t.points),
    widgets: expectedTraces.flatMap((t) => t.widgets).sort(),
    connectionsInTransaction: 0,
  };
  programsRun += programs.length;
  landedTotal += landed.length;
  leftInTransaction += inTransactionNow;
  for (const t of traces)
    for (const [key, value] of Object.entries(t.points))
      if (key.endsWith(':caught') || key === 'end')
        seenOutcomes.add(value.replace(/ p[.\d]*$/, ''));
  if (!isDeepStrictEqual(actual, expected)) mismatches++;
  expect(actual).toEqual(expected);
}

/** Fixed seeds: every run of the suite checks the same programs; change one to explore others. */
const SEED_ONE_AT_A_TIME = 0x9c311;
const SEED_INTERLEAVED = 0x9c312;
const SEED_STREAMS = 0x9c313;

describe('request context under random programs', () => {
  it('matches the model at every point of programs run one at a time', async () => {
    await fc.assert(
      fc.asyncProperty(program, (p) => checkPrograms([p])),
      { numRuns: 1000, seed: SEED_ONE_AT_A_TIME },
    );
  }, 180_000);

  it('matches the model with several programs interleaved', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(program, { minLength: 2, maxLength: CONCURRENT_PROGRAMS }), (ps) =>
        checkPrograms(ps),
      ),
      { numRuns: 300, seed: SEED_INTERLEAVED },
    );
  }, 180_000);

  it('leaves no transaction open and no context behind', async () => {
    expect(tryGetContext()).toBeUndefined();
    const open = await adminQuery<{ count: number }>(
      `SELECT count(*)::int AS count FROM pg_stat_activity
       WHERE datname = ANY($1) AND state LIKE 'idle in transaction%'`,
      [world.cells.map((c) => c.db.name)],
    );
    expect(open[0]?.count).toBe(0);
  });

  it('reports its figures', () => {
    reportFigure(SCENARIO, 'programs run', programsRun, '>= 300');
    reportFigure(SCENARIO, 'mismatches', mismatches, 'must be 0');
    reportFigure(SCENARIO, 'connections left in a transaction', leftInTransaction, 'must be 0');
    reportFigure(SCENARIO, 'shared-builder executions', coverage.shared, '> 0');
    reportFigure(SCENARIO, 'parallel nested transactions settled', coverage.settled, '> 0');
    reportFigure(SCENARIO, '  of which rolled back', coverage.settledRolledBack, '> 0');
    reportFigure(SCENARIO, 'late jobs run after their program', coverage.late, '> 0');
    reportFigure(SCENARIO, '  of which scheduled inside a transaction', coverage.lateInTransaction, '> 0');
    expect(programsRun).toBeGreaterThanOrEqual(300);
    expect(leftInTransaction).toBe(0);
    for (const count of Object.values(coverage)) expect(count).toBeGreaterThan(0);
    // The programs really committed writes and met every kind of failure the model predicts.
    expect(landedTotal).toBeGreaterThan(0);
    expect([...seenOutcomes].sort()).toEqual(
      expect.arrayContaining([
        'CELLS_CELL_SWITCH_IN_TRANSACTION',
        'CELLS_INVALID_ARGUMENT',
        'CELLS_NO_CONTEXT',
        'CELLS_NO_TARGET_CELL',
        'CELLS_UNKNOWN_CELL',
        'THROWN',
        'none',
        'ok',
      ]),
    );
    expect(mismatches).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// Streams under eviction: a world of 3 cells with maxOpenCells 2, so a call to the third cell
// pushes a streaming cell out of the LRU while the stream is read slowly.

const STREAM_SCENARIO = '4 stream property';
const STREAM_ROWS = 600;
/** A stream that delivers no row for this long has stopped silently. */
const STREAM_STALL_MS = 3000;

type StreamBranch =
  | { op: 'stream'; cell: 0 | 1 | 2; every: number; pauseMs: number; builder: 'shared' | 'fresh' }
  | { op: 'churn'; cell: 0 | 1 | 2; delayMs: number; kind: 'count' | 'shared' | 'rollback' | 'nested' };

const streamCell = fc.constantFrom<0 | 1 | 2>(0, 1, 2);
const streamBranch: fc.Arbitrary<StreamBranch> = fc.oneof(
  fc.record({
    op: fc.constant('stream' as const),
    cell: streamCell,
    every: fc.integer({ min: 50, max: 300 }),
    pauseMs: fc.integer({ min: 1, max: 10 }),
    builder: fc.constantFrom<'shared' | 'fresh'>('shared', 'fresh'),
  }),
  fc.record({
    op: fc.constant('churn' as const),
    cell: streamCell,
    delayMs: fc.integer({ min: 0, max: 40 }),
    kind: fc.constantFrom<'count' | 'shared' | 'rollback' | 'nested'>('count', 'shared', 'rollback', 'nested'),
  }),
);
/** One to two streams, one to four calls that churn the LRU. */
const streamProgram = fc
  .array(streamBranch, { minLength: 2, maxLength: 5 })
  .filter((bs) => {
    const streams = bs.filter((b) => b.op === 'stream').length;
    return streams >= 1 && streams <= 2 && bs.length - streams >= 1;
  });

/** What a branch should give: every row of its own cell and 'end', or the calls' fixed results. */
function expectedOf(b: StreamBranch): string {
  if (b.op === 'stream') return `${STREAM_ROWS} rows of c${b.cell}, 0 foreign, end`;
  switch (b.kind) {
    case 'count':
    case 'shared':
      return `n=${STREAM_ROWS}`;
    case 'rollback':
      return `n=${STREAM_ROWS + 1} inside, rolled back`;
    case 'nested':
      return `ok,THROWN,ok; n=${STREAM_ROWS + 3} inside, rolled back`;
  }
}

class StreamRollback extends Error {}

describe('routed streams under eviction, in random programs', () => {
  let streamWorld: CellWorld;
  let streamBuilder: SelectQueryBuilder<Widget>;
  let streamPrograms = 0;
  let streamMismatches = 0;
  let streamedRows = 0;
  let streamLeftInTransaction = 0;

  beforeAll(async () => {
    streamWorld = await createCellWorld('propstream', {
      cellCount: 3,
      cells: { maxOpenCells: 2 },
    });
    for (const { db, mapping } of streamWorld.cells) {
      await rowsIn(
        db.url,
        `INSERT INTO widgets (uuid, name, intended_cell)
         SELECT gen_random_uuid(), 'streamed', $1 FROM generate_series(1, $2::int)`,
        [mapping.uuid, STREAM_ROWS],
      );
    }
    // One builder for every stream and count of every program, made outside any context.
    streamBuilder = streamWorld.lib
      .getRepository(Widget)
      .createQueryBuilder('w')
      .select('w.intended_cell', 'cell')
      .where('w.name = :name', { name: 'streamed' });
  }, 60_000);

  afterAll(async () => {
    await streamWorld?.destroy();
  });

  const labelOf = (uuid: string): string => {
    const index = streamWorld.cells.findIndex((c) => c.mapping.uuid === uuid);
    return index < 0 ? `other ${uuid}` : `c${index}`;
  };

  /** Reads `stream` slowly to its end; resolves with what it delivered and how it finished. */
  const drain = (stream: Readable, cell: 0 | 1 | 2, every: number, pauseMs: number) =>
    new Promise<string>((resolve) => {
      let rows = 0;
      let foreign = 0;
      let watchdog: NodeJS.Timeout;
      const finish = (how: string) => {
        clearTimeout(watchdog);
        streamedRows += rows;
        resolve(`${rows} rows of c${cell}, ${foreign} foreign, ${how}`);
      };
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => finish('stalled'), STREAM_STALL_MS);
      };
      arm();
      stream.on('data', (row: { cell: string }) => {
        rows++;
        if (labelOf(row.cell) !== `c${cell}`) foreign++;
        arm();
        if (rows % every === 0) {
          stream.pause();
          setTimeout(() => stream.resume(), pauseMs);
        }
      });
      stream.on('end', () => finish('end'));
      stream.on('error', (error: Error) => finish(`error ${error.message}`));
    });

  const runBranch = async (b: StreamBranch): Promise<string> => {
    const { lib } = streamWorld;
    const widgets = lib.getRepository(Widget);
    const mapping = streamWorld.cells[b.cell]!.mapping;
    if (b.op === 'stream') {
      const builder = b.builder === 'shared' ? streamBuilder : streamBuilder.clone();
      const stream = await targetCell(mapping, () => builder.stream());
      return drain(stream, b.cell, b.every, b.pauseMs);
    }
    await sleep(b.delayMs);
    return targetCell(mapping, async () => {
      switch (b.kind) {
        case 'count':
          return `n=${await widgets.countBy({ name: 'streamed' })}`;
        case 'shared':
          return `n=${await streamBuilder.getCount()}`;
        case 'rollback':
        case 'nested': {
          let inside = '';
          const row = () => ({ uuid: randomUUID(), name: 'streamed', intendedCell: mapping.uuid });
          await lib
            .transaction(async () => {
              await widgets.insert(row());
              if (b.kind === 'nested') {
                const settled = await Promise.allSettled(
                  [0, 1, 2].map((i) =>
                    lib.transaction(async () => {
                      await widgets.insert(row());
                      if (i === 1) throw new ProgramThrow('nested');
                    }),
                  ),
                );
                inside = `${settled.map((s) => (s.status === 'fulfilled' ? 'ok' : codeOf(s.reason).split(' ')[0])).join(',')}; `;
              }
              inside += `n=${await streamBuilder.getCount()} inside`;
              throw new StreamRollback();
            })
            .catch((error: unknown) => {
              if (!(error instanceof StreamRollback)) throw error;
            });
          return `${inside}, rolled back`;
        }
      }
    });
  };

  it('delivers every row of each stream, and ends it, while other calls evict its cell', async () => {
    await fc.assert(
      fc.asyncProperty(streamProgram, async (branches) => {
        const actual = await withTimeout(
          Promise.all(
            branches.map((b) => runBranch(b).catch((error: unknown) => `failed: ${codeOf(error)}`)),
          ),
          30_000,
          'a stream program',
        );
        const inTransactionNow = await countConnectionsInTransaction(
          admin,
          streamWorld.cells.map((c) => c.db.name),
        );
        streamPrograms++;
        streamLeftInTransaction += inTransactionNow;
        const result = { branches: actual, connectionsInTransaction: inTransactionNow };
        const expected = { branches: branches.map(expectedOf), connectionsInTransaction: 0 };
        if (!isDeepStrictEqual(result, expected)) streamMismatches++;
        expect(result).toEqual(expected);
      }),
      { numRuns: 40, seed: SEED_STREAMS },
    );
  }, 180_000);

  it('reports its figures', () => {
    const stats = streamWorld.lib.stats();
    reportFigure(STREAM_SCENARIO, 'programs run', streamPrograms, '>= 40');
    reportFigure(STREAM_SCENARIO, 'rows streamed', streamedRows, '> 0');
    reportFigure(STREAM_SCENARIO, 'evictions meanwhile (maxOpenCells 2, 3 cells)', stats.evictions, '> 0');
    reportFigure(STREAM_SCENARIO, 'mismatches', streamMismatches, 'must be 0');
    reportFigure(STREAM_SCENARIO, 'connections left in a transaction', streamLeftInTransaction, 'must be 0');
    expect(streamPrograms).toBeGreaterThanOrEqual(40);
    expect(stats.evictions).toBeGreaterThan(0);
    expect(streamMismatches).toBe(0);
    expect(streamLeftInTransaction).toBe(0);
  });
});
