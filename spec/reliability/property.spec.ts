import { randomBytes, randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { Pool } from 'pg';
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
import { adminQuery } from '../support/databases';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';

// Scenario 4: random programs of nested targetCell / setTargetCell / cells.transaction / throw /
// await / runWithContext run against a real Cells with three cells, and a pure model predicts the
// context (cell, readDeleted, in-transaction) at every point, every error, the database each routed
// query reaches and which transaction writes survive.

const SCENARIO = '4 context property';

/** A cell a step names: one of the three cells, none (untargeted), an unmapped uuid, or a malformed one. */
type CellChoice = 0 | 1 | 2 | null | 'unknown' | 'bad';
type AwaitKind = 'micro' | 'tick' | 'immediate' | 'timer';

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
  { arbitrary: fc.record({ op: fc.constant('query' as const) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('throw' as const) }), weight: 1 },
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
      return inTransaction ? 0 : 1;
    case 'parallel':
      return s.branches.reduce((sum, b) => sum + stepConnections(b, inTransaction), 0);
    case 'target':
    case 'try':
      return connectionsNeeded(s.body, inTransaction);
    case 'context':
      return connectionsNeeded(s.body, false);
    default:
      return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// The model: a pure interpreter over model contexts, mirroring the documented semantics.

type ModelCell = 0 | 1 | 2 | 'unknown' | null;

/** A transaction's connection: its cell, and the innermost transaction (or savepoint) open on it. */
interface ModelConnection {
  cell: 0 | 1 | 2;
  innermost: string;
}

interface ModelContext {
  cell: ModelCell;
  mode: string;
  tx: ModelConnection | null;
}

class ModelError {
  constructor(readonly code: string) {}
}

function cellLabel(cell: ModelCell): string {
  return cell === null ? 'main' : cell === 'unknown' ? 'unknown' : `c${cell}`;
}

/** Predicts the trace of `p` run under tag `tag`. */
function predict(p: Program, tag: string): Trace {
  const points: Record<string, string> = {};
  const parentOf = new Map<string, string | null>();
  const writes: Array<{ path: string; cell: 0 | 1 | 2 }> = [];
  const failed = new Set<string>();

  const see = (key: string, ctx: ModelContext | undefined) => {
    points[key] =
      ctx === undefined ? 'none' : `${cellLabel(ctx.cell)}/${ctx.mode}/${ctx.tx ? 'tx' : '-'}`;
  };
  const retarget = (ctx: ModelContext, choice: CellChoice) => {
    if (choice === 'bad') throw new ModelError('CELLS_INVALID_ARGUMENT');
    if (ctx.tx !== null && choice !== ctx.cell)
      throw new ModelError('CELLS_CELL_SWITCH_IN_TRANSACTION');
    ctx.cell = choice;
  };
  const steps = (list: readonly Step[], path: string, ctx: ModelContext | undefined) => {
    list.forEach((s, i) => run(s, `${path}.${i}`, ctx));
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
          inner = { ...ctx, tx: { cell: ctx.cell, innermost: path } };
          parentOf.set(path, null);
        }
        const connection = inner.tx!;
        const outer = connection.innermost;
        connection.innermost = path;
        see(`${path}:body`, inner);
        points[`${path}:db`] = cellLabel(connection.cell);
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
      case 'query': {
        if (ctx === undefined) throw new ModelError('CELLS_NO_CONTEXT');
        const cell = ctx.tx?.cell ?? ctx.cell;
        if (cell === null) throw new ModelError('CELLS_NO_TARGET_CELL');
        if (cell === 'unknown') throw new ModelError('CELLS_UNKNOWN_CELL');
        points[`${path}:db`] = cellLabel(cell);
        break;
      }
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

let world: CellWorld;
let checkPools: Pool[] = [];
let programsRun = 0;
let mismatches = 0;
/** Transaction writes found in the cells, and the error codes programs ended or caught with: coverage. */
let landedTotal = 0;
const seenOutcomes = new Set<string>();

beforeAll(async () => {
  world = await createCellWorld('prop', { cellCount: 3, cells: { poolSize: POOL_SIZE } });
  checkPools = world.cells.map((c) => new Pool({ connectionString: c.db.url, max: 1 }));
}, 60_000);

afterAll(async () => {
  await Promise.all(checkPools.map((p) => p.end()));
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

async function execute(p: Program, tag: string): Promise<Trace> {
  const points: Record<string, string> = {};
  const widgets = world.lib.getRepository(Widget);
  const see = (key: string) => {
    points[key] = snapshot();
  };
  const currentDatabase = async (): Promise<string> => {
    const [row] = (await widgets.query('SELECT current_database() AS db')) as Array<{ db: string }>;
    return labelOfDatabase(row?.db ?? '');
  };

  const steps = async (list: readonly Step[], path: string, sequential: boolean) => {
    for (const [i, s] of list.entries()) await run(s, `${path}.${i}`, sequential);
  };
  const run = async (s: Step, path: string, sequential: boolean): Promise<void> => {
    see(`${path}:in`);
    switch (s.op) {
      case 'target':
        await targetCell(cellRef(s.cell), async () => {
          see(`${path}:body`);
          await steps(s.body, path, sequential);
        });
        break;
      case 'context': {
        const ctx = new RequestContext({ readDeleted: s.mode, cell: cellRef(s.cell) });
        await runWithContext(ctx, async () => {
          see(`${path}:body`);
          await steps(s.body, path, sequential);
        });
        break;
      }
      case 'transaction':
        await world.lib.transaction(async () => {
          see(`${path}:body`);
          points[`${path}:db`] = await currentDatabase();
          await widgets.insert({
            uuid: randomUUID(),
            name: `${tag}${path}`,
            intendedCell: getContext().cellUuid ?? '',
          });
          // One connection runs one statement at a time: branches inside a transaction take turns.
          await steps(s.body, path, true);
        });
        break;
      case 'try': {
        let caught = 'none';
        try {
          await steps(s.body, path, sequential);
        } catch (error) {
          caught = codeOf(error);
        }
        points[`${path}:caught`] = caught;
        break;
      }
      case 'parallel': {
        const branch = (b: Step, i: number) => run(b, `${path}.${i}`, sequential);
        let settled: PromiseSettledResult<void>[];
        if (sequential) {
          settled = [];
          for (const [i, b] of s.branches.entries()) {
            settled.push(
              await branch(b, i).then(
                (): PromiseSettledResult<void> => ({ status: 'fulfilled', value: undefined }),
                (reason: unknown): PromiseSettledResult<void> => ({ status: 'rejected', reason }),
              ),
            );
          }
        } else {
          settled = await Promise.allSettled(s.branches.map(branch));
        }
        const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failure) throw failure.reason;
        break;
      }
      case 'set':
        setTargetCell(getContext(), cellRef(s.cell));
        break;
      case 'readDeleted':
        getContext().readDeleted = s.mode as ReadDeleted;
        break;
      case 'query':
        points[`${path}:db`] = await currentDatabase();
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
    const body = () => steps(p.body, 'p', false);
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

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `programs` at once and checks each against its model; counts every mismatch. */
async function checkPrograms(programs: readonly Program[]): Promise<void> {
  const runTag = `r${randomBytes(5).toString('hex')}`;
  const tags = programs.map((_, i) => `${runTag}/${i}/`);
  const traces = await withTimeout(
    Promise.all(programs.map((p, i) => execute(p, tags[i]!))),
    20_000,
    'a run',
  );
  const landed = await landedWidgets(runTag);
  const actual = { programs: traces.map((t) => t.points), widgets: landed };
  const expectedTraces = programs.map((p, i) => predict(p, tags[i]!));
  const expected = {
    programs: expectedTraces.map((t) => t.points),
    widgets: expectedTraces.flatMap((t) => t.widgets).sort(),
  };
  programsRun += programs.length;
  landedTotal += landed.length;
  for (const t of traces)
    for (const [key, value] of Object.entries(t.points))
      if (key.endsWith(':caught') || key === 'end')
        seenOutcomes.add(value.replace(/ p[.\d]*$/, ''));
  if (!isDeepStrictEqual(actual, expected)) mismatches++;
  expect(actual).toEqual(expected);
}

describe('request context under random programs', () => {
  it('matches the model at every point of programs run one at a time', async () => {
    await fc.assert(
      fc.asyncProperty(program, (p) => checkPrograms([p])),
      { numRuns: 1000 },
    );
  }, 180_000);

  it('matches the model with several programs interleaved', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(program, { minLength: 2, maxLength: CONCURRENT_PROGRAMS }), (ps) =>
        checkPrograms(ps),
      ),
      { numRuns: 300 },
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
    expect(programsRun).toBeGreaterThanOrEqual(300);
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
