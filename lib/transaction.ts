import type { EntityManager, QueryRunner } from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel';
import { translateConnectionError } from './connection-errors';
import { runInternal, type RequestContext } from './context';
import type { ActiveTransaction, Route } from './route';
import type { RouteTelemetry } from './telemetry-attributes';

/**
 * Transactions of `cells.transaction()`. The outermost one owns a query runner (one pooled
 * connection) for its whole life; nested ones are savepoints on that connection. Nested
 * transactions started together run one at a time (each waits for the previous to commit or roll
 * back), because savepoints on one connection form a stack: run in parallel they would share a
 * savepoint name and one's ROLLBACK TO would undo another's work. The connection goes back to the
 * pool only outside a transaction (see connection-pool.ts).
 */

/** Which transaction slot of the context a database uses. @internal */
export type TransactionSlot = symbol;

/** An open transaction (or savepoint); routed calls of its database join it while it runs. @internal */
export class TransactionRoute implements Route, ActiveTransaction {
  readonly manager: EntityManager;
  /** Ends when the previous nested transaction of this level has finished. */
  private tail: Promise<void> = Promise.resolve();
  /** Nested transactions of this level queued or running. */
  private nestedCount = 0;
  private ended = false;

  constructor(
    readonly owner: object,
    readonly key: string,
    readonly label: string,
    readonly queryRunner: QueryRunner,
    private readonly parent?: TransactionRoute,
    readonly telemetry?: RouteTelemetry,
    /** Opened on a read-only cell: its routed writes are refused (see Route.readOnly). */
    readonly readOnly = false,
  ) {
    this.manager = queryRunner.manager;
  }

  release(): void {}

  /**
   * This route once no nested transaction of this level is queued or open: a statement of this
   * level run while a savepoint is open would be undone with it when it rolls back, so it waits
   * for the savepoints started before it.
   */
  whenFree(): this | Promise<this> {
    if (this.nestedCount === 0) return this;
    return this.tail.then(() => this.whenFree());
  }

  /**
   * True until the transaction's callback has settled: work that runs later (a timer, a bound
   * listener, a nested transaction started then) routes outside it, even while the transaction
   * still finishes (waits for its queued nested transactions, commits). Still true after its
   * connection was lost, so that the callback's next statements fail with CellUnreachableError
   * rather than run outside the transaction. A savepoint runs until its own callback settles,
   * also when the enclosing callback settled first (the enclosing transaction waits for it).
   */
  get running(): boolean {
    return !this.ended;
  }

  /** This transaction if it runs, else the closest enclosing one that does; undefined after all ended. */
  active(): TransactionRoute | undefined {
    if (this.running) return this;
    return this.parent?.active();
  }

  /**
   * Runs `fn` in a savepoint of this transaction, after the nested transactions started before it
   * on this level have finished. Call it only while this transaction runs: it is then admitted, and
   * the transaction finishes only after it.
   */
  async nested<T>(ctx: RequestContext, slot: TransactionSlot, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    const previous = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((resolve) => (done = resolve));
    this.nestedCount++;
    try {
      await previous;
      await this.queryRunner.startTransaction();
      // A rolled-back savepoint leaves the enclosing transaction going on (it may commit).
      return await new TransactionRoute(this.owner, this.key, this.label, this.queryRunner, this, this.telemetry, this.readOnly).run(ctx, slot, fn);
    } catch (error) {
      throw translateConnectionError(error, this.label, this.queryRunner);
    } finally {
      this.nestedCount--;
      done();
    }
  }

  /**
   * Runs the callback of this (started) transaction or savepoint in a copy of `ctx` whose `slot`
   * holds it; then, once its queued nested transactions have finished (savepoints still running
   * would otherwise be committed half-done), commits it, or rolls it back if anything threw.
   */
  async run<T>(ctx: RequestContext, slot: TransactionSlot, fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    const runner = this.queryRunner;
    try {
      let value: T;
      try {
        value = await runInNewContext(ctx, slot, this, () => fn(runner.manager));
      } finally {
        // Work that runs from now on routes outside this transaction.
        this.ended = true;
      }
      await this.tail;
      await runner.commitTransaction();
      return value;
    } catch (error) {
      await this.tail;
      if (runner.isTransactionActive && !runner.isReleased) await runner.rollbackTransaction().catch(() => undefined);
      throw error;
    }
  }
}

/**
 * Runs `fn` in a new transaction on `route`'s database, in a copy of `ctx` whose `slot` holds it.
 * The query runner is released in every case; if COMMIT or ROLLBACK failed, its connection is
 * destroyed rather than reused. Connection failures surface as CellUnreachableError.
 * @internal
 */
export async function runTransaction<T>(
  owner: object,
  route: Route,
  key: string,
  ctx: RequestContext,
  slot: TransactionSlot,
  isolation: IsolationLevel | undefined,
  fn: (manager: EntityManager) => Promise<T>,
): Promise<T> {
  const runner = route.manager.dataSource.createQueryRunner();
  try {
    await runner.startTransaction(isolation);
    // A lost connection makes TypeORM release the runner; its pg client recorded the loss
    // (connection-pool.ts), so later statements fail typed.
    return await new TransactionRoute(owner, key, route.label, runner, undefined, route.telemetry, route.readOnly === true).run(ctx, slot, fn);
  } catch (error) {
    throw translateConnectionError(error, route.label, runner);
  } finally {
    // The pool guard destroys the connection if it is still inside a transaction.
    await runner.release();
  }
}

function runInNewContext<T>(ctx: RequestContext, slot: TransactionSlot, tx: TransactionRoute, fn: () => Promise<T>): Promise<T> {
  const inner = ctx.clone();
  (inner as unknown as Record<symbol, ActiveTransaction>)[slot] = tx;
  return runInternal(inner, fn);
}
