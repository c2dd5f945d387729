import { inspect } from 'node:util';
import { integerArg } from './arguments';
import { InvalidArgumentError, ServerBusyError } from './errors';

/**
 * The connection budget of one database server (`maxConnectionsPerServer`): every pooled
 * connection of every cell on the server holds one permit from its opening until its socket
 * closes. A connection that finds the budget spent waits its turn (FIFO) for at most the acquire
 * timeout, and meanwhile an idle connection of another pool on the server is closed so its permit
 * passes on: cold cells give their connections back to hot ones.
 */

/** Counters of one server's budget, in `cells.stats().servers`. */
export interface ServerBudgetStats {
  /** The server, as `host:port` (host in lower case); never a user name or password. */
  server: string;
  /** Its budget: the most connections open to it at once. */
  limit: number;
  /** Connections holding a permit now: open, or opening. */
  inUse: number;
  /** Connections waiting for a permit now. */
  waiting: number;
  /** Idle connections of other cells closed so that a waiting one could open, since start. */
  givenBack: number;
  /** Waits that passed the acquire timeout (ServerBusyError), since start. */
  timedOut: number;
}

/** What the budget uses of a pg-pool Pool: its idle list and `_remove` (private fields of pg-pool 3). @internal */
export interface BudgetPool {
  readonly options: object;
  readonly ending?: boolean;
  readonly _idle?: ReadonlyArray<{ client: BudgetClient }>;
  _remove?(client: BudgetClient): void;
}

/** A pooled pg client as the budget sees it. @internal */
export interface BudgetClient {
  /** When it was last released idle to its pool (`performance.now()`); unset: never checked out. */
  [kIdleSince]?: number;
  /** Set when the budget closes it for a waiter: its permit then stops counting as on its way back. */
  [kGivenBack]?: boolean;
}

/** @internal */
export const kIdleSince = Symbol('typeorm-cells.idleSince');
/** @internal */
export const kGivenBack = Symbol('typeorm-cells.givenBack');

interface Waiter {
  grant(): void;
  timer: NodeJS.Timeout | undefined;
  /** The options of the waiting connection's pool: names the pool. */
  poolOptions: object | undefined;
}

/** One server's budget. @internal */
export class ServerBudget {
  private inUse = 0;
  private readonly waiters: Waiter[] = [];
  /** Pools of DataSources open on this server, tracked from their creation to their end. */
  private readonly pools = new Set<BudgetPool>();
  /** Connections closed for waiters whose permits have not come back yet. */
  private givingBack = 0;
  private givenBack = 0;
  private timedOut = 0;
  /** While connections wait, looks again every IDLE_SWEEP_MS for an idle connection to give back. */
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    readonly server: string,
    readonly limit: number,
  ) {}

  /** Its counters only: inspecting a pool's options must not walk into the other pools of the server. */
  [inspect.custom](): string {
    return `ServerBudget ${inspect(this.stats())}`;
  }

  /**
   * Takes a permit for one connection of the pool whose options are `poolOptions`: at once when
   * one is free and nobody waits, else in FIFO order. Resolves `true` when taken synchronously.
   * @param timeoutMs - the acquire timeout; 0 waits without limit.
   * @param label - how the error names the database.
   * @throws ServerBusyError when no permit was free within `timeoutMs`.
   */
  acquire(poolOptions: object | undefined, timeoutMs: number, label: string): true | Promise<void> {
    if (this.inUse < this.limit && this.waiters.length === 0) {
      this.inUse++;
      return true;
    }
    const started = performance.now();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { grant: resolve, timer: undefined, poolOptions };
      if (timeoutMs > 0) {
        waiter.timer = setTimeout(() => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          this.timedOut++;
          reject(this.busyError(label, Math.round(performance.now() - started)));
        }, timeoutMs);
      }
      this.waiters.push(waiter);
      this.reclaimIdle(poolOptions);
    });
  }

  /** Gives back the permit of a connection that closed (or never opened): to the first waiter, else free. */
  release(client: BudgetClient): void {
    if (client[kGivenBack] === true) {
      client[kGivenBack] = false;
      this.givingBack--;
    }
    const next = this.waiters.shift();
    if (next === undefined) {
      this.inUse--;
      return;
    }
    if (next.timer !== undefined) clearTimeout(next.timer);
    next.grant();
  }

  /**
   * True when a connection just released idle by a pool with no caller of its own waiting should
   * be closed, because a connection of this server waits for its permit; marks it as on its way.
   */
  takeBack(client: BudgetClient): boolean {
    if (this.waiters.length <= this.givingBack) return false;
    client[kGivenBack] = true;
    this.givingBack++;
    this.givenBack++;
    return true;
  }

  /** True when a connection of the pool whose options are `poolOptions` waits for a permit. */
  isWaitedOnBy(poolOptions: object): boolean {
    return this.waiters.some((waiter) => waiter.poolOptions === poolOptions);
  }

  /** The error of a call of `label` that waited `waitedMs` because this budget was spent. */
  busyError(label: string, waitedMs: number): ServerBusyError {
    return new ServerBusyError(label, this.server, this.limit, waitedMs);
  }

  track(pool: BudgetPool): void {
    this.pools.add(pool);
  }

  untrack(pool: BudgetPool): void {
    this.pools.delete(pool);
  }

  stats(): ServerBudgetStats {
    const { server, limit, inUse, givenBack, timedOut } = this;
    return { server, limit, inUse, waiting: this.waiters.length, givenBack, timedOut };
  }

  /**
   * Closes the longest-idle connection of another pool on this server, unless enough are already
   * on their way back for the waiters. Uses pg-pool's private idle list and `_remove` (pg-pool 3;
   * spec/server-budget.spec.ts fails if they change); without them it does nothing, and waiters get
   * connections released by their pools (`takeBack`) or closed by pg-pool's idle timeout.
   */
  private reclaimIdle(exclude: object | undefined, minIdleMs = 0): void {
    if (this.waiters.length <= this.givingBack) return;
    this.armSweep();
    let chosen: { pool: BudgetPool; client: BudgetClient } | undefined;
    let oldest = Infinity;
    for (const pool of this.pools) {
      if (pool.options === exclude || pool.ending === true || typeof pool._remove !== 'function') continue;
      // pg-pool appends to its idle list on release and takes from its end: the first is the oldest.
      const client = pool._idle?.[0]?.client;
      if (client === undefined) continue;
      const since = client[kIdleSince] ?? 0;
      if (performance.now() - since < minIdleMs) continue;
      if (since < oldest) {
        oldest = since;
        chosen = { pool, client };
      }
    }
    if (chosen === undefined) return;
    chosen.client[kGivenBack] = true;
    this.givingBack++;
    this.givenBack++;
    chosen.pool._remove!(chosen.client);
  }

  /**
   * Connections can sit idle where no release or new waiter looks: a cell opened for a caller that
   * gave up (a scatter-gather's deadline passed) keeps the first connection of its pool. While
   * connections wait, one idle for IDLE_SWEEP_MS or more is given back every IDLE_SWEEP_MS, so no
   * waiter outlives an idle connection by more than that.
   */
  private armSweep(): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setTimeout(() => {
      this.sweeper = undefined;
      if (this.waiters.length > this.givingBack) this.reclaimIdle(undefined, IDLE_SWEEP_MS);
    }, IDLE_SWEEP_MS);
    this.sweeper.unref();
  }
}

/** How often waiting connections look for an idle one to take over, and how idle it must be, in ms. */
const IDLE_SWEEP_MS = 50;

/** The `maxConnectionsPerServer` option: one number for every server, or one per `host:port`. */
export type MaxConnectionsPerServer = number | Readonly<Record<string, number>>;

const MAX_BUDGET = 1_000_000;
/** The key of a per-server map that applies to every server it does not name. */
const ANY_SERVER = '*';
const DEFAULT_PORT = 5432;

/** The budgets of one Cells, one per server, created on first use. @internal */
export class ServerBudgets {
  private readonly budgets = new Map<string, ServerBudget>();
  private readonly limits: ReadonlyMap<string, number>;
  private readonly fallback: number | undefined;

  /** @throws InvalidArgumentError for an option that is not a valid number or map (see `serverBudgetLimits`). */
  constructor(option: MaxConnectionsPerServer) {
    const { limits, fallback } = serverBudgetLimits(option);
    this.limits = limits;
    this.fallback = fallback;
  }

  /** The budget of the server at `host`:`port`, or undefined when that server has none. */
  of(host: string | undefined, port: number | undefined): ServerBudget | undefined {
    const key = serverKey(host ?? 'localhost', port ?? DEFAULT_PORT);
    let budget = this.budgets.get(key);
    if (budget === undefined) {
      const limit = this.limits.get(key) ?? this.fallback;
      if (limit === undefined) return undefined;
      budget = new ServerBudget(key, limit);
      this.budgets.set(key, budget);
    }
    return budget;
  }

  stats(): ServerBudgetStats[] {
    return [...this.budgets.values()].map((budget) => budget.stats());
  }
}

/**
 * `host:port` with the host in lower case (host names are case-insensitive) and an IPv6 address
 * in brackets. `localhost` and `127.0.0.1` stay two keys: the library does not resolve names.
 * @internal
 */
export function serverKey(host: string, port: number): string {
  const name = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return `${name.includes(':') ? `[${name}]` : name}:${port}`;
}

/**
 * The limits of the `maxConnectionsPerServer` option by server key, and the one for other servers.
 * @throws InvalidArgumentError for a limit that is not an integer from 1 to 1000000, a map that is
 * not a plain object, or a key that is not `host`, `host:port` or `*`.
 * @internal
 */
export function serverBudgetLimits(option: MaxConnectionsPerServer): { limits: ReadonlyMap<string, number>; fallback: number | undefined } {
  if (typeof option === 'number') {
    integerArg(option, 'maxConnectionsPerServer', 1, MAX_BUDGET);
    return { limits: new Map(), fallback: option };
  }
  const proto: unknown = option === null || typeof option !== 'object' ? undefined : Object.getPrototypeOf(option);
  if (proto !== Object.prototype && proto !== null) {
    throw new InvalidArgumentError(
      `maxConnectionsPerServer must be a number or a plain object of numbers by 'host:port', got ${option === null ? 'null' : typeof option}.`,
    );
  }
  const limits = new Map<string, number>();
  let fallback: number | undefined;
  for (const [key, limit] of Object.entries(option)) {
    const at = `maxConnectionsPerServer[${JSON.stringify(key.slice(0, 60))}]`;
    if (limit === undefined) throw new InvalidArgumentError(`${at} must be an integer from 1 to ${MAX_BUDGET}, got undefined.`);
    integerArg(limit, at, 1, MAX_BUDGET);
    if (key === ANY_SERVER) fallback = limit;
    else limits.set(parseServerKey(key, at), limit);
  }
  return { limits, fallback };
}

function parseServerKey(key: string, at: string): string {
  const match = /^(\[[^\]]+\]|[^:[\]\s]+)(?::(\d{1,5}))?$/.exec(key);
  const port = match?.[2] === undefined ? DEFAULT_PORT : Number(match[2]);
  if (match === null || port < 1 || port > 65_535) {
    throw new InvalidArgumentError(`${at}: the key must be 'host', 'host:port', '[ipv6]:port' or '*'.`);
  }
  return serverKey(match[1]!, port);
}
