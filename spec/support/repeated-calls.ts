/** What `repeatCalls` counted once stopped. */
export interface RepeatedCalls {
  /** Calls that resolved. */
  calls: number;
  /** What each rejected call threw, in order. */
  failures: unknown[];
}

/**
 * Starts `workers` loops that each run `call` again as soon as the last one settled, until
 * `stop()`; `stop()` resolves once every loop's last call has settled. A load for a change made
 * under traffic (a rotated secret, a reloaded cell): a failure is recorded, and the loop goes on.
 */
export function repeatCalls(workers: number, call: () => Promise<unknown>): { stop(): Promise<RepeatedCalls> } {
  const counted: RepeatedCalls = { calls: 0, failures: [] };
  let running = true;
  const worker = async (): Promise<void> => {
    while (running) {
      try {
        await call();
        counted.calls++;
      } catch (error) {
        counted.failures.push(error);
      }
    }
  };
  const loops = Array.from({ length: workers }, () => worker());
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return counted;
    },
  };
}
