import { addCheckoutWaiter } from './checkout-waiters';
import { currentContext, kCallSignal } from './context';
import type { PoolObserver } from './telemetry';

/**
 * One caller's checkout from a pool whose own queue waits for ever (pg-pool's, mysql2's), with the
 * wait bounded as the pg and mysql2 pool guards (connection-pool.ts, mysql-pool.ts) need it:
 * - by `acquireTimeoutMs`, then the driver's busy error (CellBusyError, or the server budget's);
 * - inside a scatter-gather, by the gather's deadline (the context's abort signal);
 * - by a forced close of the driver, which rejects it at once (checkout-waiters.ts);
 * - a caller that gives up leaves the driver's queue, and a connection the driver hands it later
 *   goes straight back;
 * - the pool observer records the time waited, or the busy error.
 * The driver keeps what is its own: the checkout call, its queue, and what a connection needs
 * before the caller gets it.
 * @internal
 */

/** What a driver's checkout callback does with the caller's wait. */
export interface CheckoutWait<T> {
  /**
   * Ends the wait when the driver answers: true when the caller still waits for the answer, false
   * when it gave up (the driver then hands any connection it got straight back). Call it first.
   */
  answer(): boolean;
  /** Hands `value` to the caller, recording the time it waited. */
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** What the caller's checkout needs of the driver once the caller gives up. */
export interface QueuedCheckout {
  /** Takes the checkout out of the driver's queue: it would only grow while the pool stays full. */
  leaveQueue(): void;
  /** The error of a caller that waited `waitedMs` and gave up (`acquireTimeoutMs`, the gather's deadline). */
  busyError(waitedMs: number): Error;
}

/** How one checkout's wait is bounded. */
export interface CheckoutBounds {
  /**
   * Whether the driver may queue this checkout (a full pool, or one with an idle connection
   * another caller may take first): only then is the wait bounded here. A checkout that opens a
   * new connection is bounded by the connect timeout instead.
   */
  mayQueue: boolean;
  /** The longest wait for a pooled connection, in ms (0: no limit). */
  acquireTimeoutMs: number;
  observer?: PoolObserver;
}

/**
 * Runs `request`, the driver's checkout, and bounds the caller's wait for its answer (see above).
 * @param driver - the DataSource driver, whose forced close rejects the wait.
 * @param request - starts the checkout; its callback calls `wait.answer()` first, then resolves or
 * rejects; returns how to leave the driver's queue and the busy error.
 */
export function boundedCheckout<T>(
  driver: object,
  { mayQueue, acquireTimeoutMs, observer }: CheckoutBounds,
  request: (wait: CheckoutWait<T>) => QueuedCheckout,
): Promise<T> {
  // Inside a scatter-gather, the wait also ends at the gather's deadline.
  const signal = mayQueue ? currentContext()?.[kCallSignal] : undefined;
  const observed = observer?.active === true ? performance.now() : undefined;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let giveUp = (): void => undefined;
    let unlist = (): void => undefined;
    const end = (): boolean => {
      if (settled) return false;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', giveUp);
      unlist();
      return true;
    };
    const queued = request({
      answer: end,
      resolve: (value) => {
        if (observed !== undefined) observer!.waited((performance.now() - observed) / 1000);
        resolve(value);
      },
      reject,
    });
    if (!mayQueue) return;
    const started = performance.now();
    const abandon = (reason?: Error): void => {
      if (!end()) return;
      queued.leaveQueue();
      if (reason !== undefined) return reject(reason);
      observer?.busy();
      reject(queued.busyError(Math.round(performance.now() - started)));
    };
    giveUp = () => abandon();
    // A forced close rejects it at once (CellsNotReadyError), rather than leaving it queued.
    unlist = addCheckoutWaiter(driver, abandon);
    if (acquireTimeoutMs > 0) timer = setTimeout(giveUp, acquireTimeoutMs);
    if (signal !== undefined) {
      if (signal.aborted) giveUp();
      else signal.addEventListener('abort', giveUp, { once: true });
    }
  });
}
