/**
 * The callers waiting for a pooled connection of each DataSource driver (pg's and mysql2's pool
 * guards register them), so that a forced close can reject them at once, and whether the driver's
 * pool was closed by force (a later checkout is then refused rather than given a new connection).
 * @internal
 */

/** Ends one caller's wait, rejecting its checkout with `error`. */
export type AbandonCheckout = (error: Error) => void;

const waiting = new WeakMap<object, Set<AbandonCheckout>>();
const closed = new WeakSet<object>();

/**
 * Records that a caller waits for a pooled connection of `driver`; returns what ends the record
 * (call it once the wait ended, whichever way).
 */
export function addCheckoutWaiter(driver: object, abandon: AbandonCheckout): () => void {
  let set = waiting.get(driver);
  if (set === undefined) waiting.set(driver, (set = new Set()));
  const own = set;
  own.add(abandon);
  return () => own.delete(abandon);
}

/** Marks `driver` closed by force and rejects every caller waiting for one of its connections with `error`. */
export function abandonCheckouts(driver: object, error: () => Error): void {
  closed.add(driver);
  const set = waiting.get(driver);
  if (set === undefined) return;
  waiting.delete(driver);
  for (const abandon of set) abandon(error());
}

/** True once `driver` was closed by force: a checkout must be refused. */
export function refusesCheckouts(driver: object): boolean {
  return closed.has(driver);
}
