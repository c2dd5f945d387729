import { Client } from 'pg';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Cells } from '../lib';
import { testDatabaseUrl } from '../spec/support/databases';
import { sleep } from '../dev/wait';

/**
 * Samples, every `intervalMs` while running, the server connections to a set of databases (from
 * pg_stat_activity, over its own connection, which it does not count), the registry's DataSources
 * holding a slot, and this process's RSS, keeping the peaks since the last `resetPeaks()`.
 */
export class PeakSampler {
  peakCellConnections = 0;
  peakTotalConnections = 0;
  /** DataSources open, opening or draining: what `maxOpenCells` bounds. */
  peakSlots = 0;
  peakRssBytes = 0;
  private readonly client = new Client({ connectionString: testDatabaseUrl('postgres') });
  /** Why sampling stopped early, if it did: the peaks then cover only the time before. */
  failure: unknown;
  private running: Promise<void> | undefined;
  private stopping = false;
  private closed = false;

  constructor(
    private readonly lib: Cells,
    /** Every database whose connections count (the API database and the cell databases). */
    private readonly databases: string[],
    /** The API database, counted apart from the cells. */
    private readonly apiDatabase: string,
    private readonly intervalMs: number,
  ) {
    // An idle client whose backend is terminated emits 'error'; unhandled, that ends the process.
    this.client.on('error', () => undefined);
  }

  async start(): Promise<void> {
    await this.client.connect();
    this.running = this.loop();
  }

  /** Stops sampling and closes the connection; safe to call when start() failed or never ran. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopping = true;
    await this.running;
    await this.client.end().catch(() => undefined);
  }

  resetPeaks(): void {
    this.peakCellConnections = 0;
    this.peakTotalConnections = 0;
    this.peakSlots = 0;
    this.peakRssBytes = 0;
  }

  private async loop(): Promise<void> {
    try {
      await this.sampleUntilStopped();
    } catch (error) {
      this.failure = error;
    }
  }

  private async sampleUntilStopped(): Promise<void> {
    while (!this.stopping) {
      const { rows } = await this.client.query<{ total: number; api: number }>(
        `SELECT count(*)::int AS total, (count(*) FILTER (WHERE datname = $2))::int AS api
         FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()`,
        [this.databases, this.apiDatabase],
      );
      const total = rows[0]?.total ?? 0;
      const stats = this.lib.stats();
      this.peakTotalConnections = Math.max(this.peakTotalConnections, total);
      this.peakCellConnections = Math.max(this.peakCellConnections, total - (rows[0]?.api ?? 0));
      this.peakSlots = Math.max(this.peakSlots, stats.open + stats.opening + stats.draining);
      this.peakRssBytes = Math.max(this.peakRssBytes, process.memoryUsage.rss());
      await sleep(this.intervalMs);
    }
  }
}

let collectGarbage: (() => void) | undefined;

/**
 * Heap bytes still reachable: heapUsed right after a full garbage collection. Unlike RSS it does
 * not move with V8's heap sizing or the allocator's retained pages, so growth here is a leak.
 */
export function liveHeapBytes(): number {
  fullGc();
  return process.memoryUsage().heapUsed;
}

/**
 * Runs a full garbage collection now. Before each timed sample of a scenario whose variants
 * allocate very differently, so one variant's garbage is not collected on another's clock.
 */
export function fullGc(): void {
  if (collectGarbage === undefined) {
    // Exposes gc() without a command-line flag; the flag only adds the global function.
    setFlagsFromString('--expose-gc');
    collectGarbage = runInNewContext('gc') as () => void;
  }
  collectGarbage();
}
