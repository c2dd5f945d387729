import type { DataSource } from 'typeorm';
import type { MappingListenerOptions } from './mapping-listener';

/**
 * How a change to the mappings reaches every process when the API database is MySQL or MariaDB,
 * which have no LISTEN/NOTIFY: each write inserts its encoded MappingChange into
 * `cell_mapping_changes` in its own transaction (`recordChange`), and each process's
 * MappingChangeLog polls the table and hands new rows to the same handler the PostgreSQL listener
 * feeds.
 *
 * AUTO_INCREMENT ids are handed out at INSERT and become visible at COMMIT, so a row may appear
 * below ids already read. The poller therefore keeps a floor below which every row was read, and
 * advances it only past rows older than SETTLE_S (by the server's clock): rows above the floor are
 * re-listed on each poll (ids only; payloads of rows not yet delivered), so a write that commits
 * late, up to SETTLE_S after its INSERT, is still delivered. A write whose transaction stays open
 * longer than that may be missed; the cache's `ttlMs` then bounds how long it goes unseen.
 */

/** The change-log table (migrations/1767000000000-MappingChangeLog.ts). @internal */
export const CHANGE_LOG_TABLE = 'cell_mapping_changes';

/** Seconds after its INSERT past which a row is taken as committed or rolled back for good. */
const SETTLE_S = 120;
/** Rows older than this are pruned; a poller silent for half of it resyncs, as it may have lost rows. */
const RETENTION_S = 3_600;
/** How often each process prunes after its first poll, in ms (spread at random over +-50%). */
const PRUNE_EVERY_MS = 60_000;
/** Most rows one query lists; a poll reads page after page until one is not full. */
const BATCH = 1_000;
/** Most rows one prune deletes, so it never holds long locks. */
const PRUNE_BATCH = 1_000;

/** Options of MappingChangeLog: the listener's callbacks, the API DataSource and the interval. @internal */
export interface MappingChangeLogOptions extends Omit<MappingListenerOptions, 'connection'> {
  /** The initialized API DataSource (MySQL or MariaDB); polls borrow a connection of its pool. */
  api: DataSource;
  /** Wait between the end of one poll and the start of the next, in ms. */
  pollIntervalMs: number;
}

/** Inserts an encoded change in the write's transaction `tx`; visible to pollers once it commits. @internal */
export async function recordChange(tx: { query(sql: string, parameters?: unknown[]): Promise<unknown> }, payload: string): Promise<void> {
  await tx.query(`INSERT INTO \`${CHANGE_LOG_TABLE}\` (\`payload\`) VALUES (?)`, [payload]);
}

interface ListedRow {
  /** A number, or a string when the driver returns BIGINTs as strings. */
  id: number | string;
  /** Null for a row at or below the highest id delivered: delivered already, or committed late. */
  payload: string | null;
  settled: number | string;
}

/**
 * Polls `cell_mapping_changes` every `pollIntervalMs` and hands each new row's payload to
 * `onPayload` once. Reports `onUp(false)` after its first poll, `onDown()` when a poll fails, and
 * `onUp(true)` when polling works again or after a silence in which rows may have been pruned, so
 * its owner resyncs as after a LISTEN reconnect. Never throws; its timers never keep the process
 * alive; `stop()` waits for a running poll. @internal
 */
export class MappingChangeLog {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private up = false;
  private everUp = false;
  /** Every row with an id up to this was delivered, or is settled and was not there; undefined: not known yet. */
  private floor: number | undefined;
  /** Ids above `floor` already delivered. */
  private readonly delivered = new Set<number>();
  /** `performance.now()` of the last poll that answered. */
  private lastAnswer = 0;
  private nextPrune = 0;
  /** True while polls answer. */
  listening = false;
  /** Times polling failed after having worked, or resynced after a silence. */
  reconnects = 0;

  constructor(private readonly options: MappingChangeLogOptions) {}

  /** Polls once (never throws) and keeps polling in the background. */
  async start(): Promise<void> {
    // The first poll that answers prunes, then one every PRUNE_EVERY_MS or so.
    this.nextPrune = 0;
    await this.tick();
  }

  /** Stops polling and waits for a running poll. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.listening = false;
    await this.running;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const run = this.poll();
    this.running = run;
    await run;
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, this.options.pollIntervalMs);
    this.timer.unref();
  }

  /** One poll: every page of rows above the floor, then a prune when one is due. Never throws. */
  private async poll(): Promise<void> {
    try {
      const silentMs = performance.now() - this.lastAnswer;
      if (this.up && silentMs > (RETENTION_S * 1_000) / 2) {
        // Suspended or starved for long enough that unread rows may have been pruned.
        this.lost();
      }
      if (this.floor === undefined) await this.startFloor();
      await this.readNewRows();
      this.lastAnswer = performance.now();
      if (!this.up) this.reachable();
      // A failed prune is no outage: the next one deletes what this one did not.
      if (performance.now() >= this.nextPrune) await this.prune().catch(() => undefined);
    } catch {
      if (this.up) this.lost();
    }
  }

  /** Starts after every row settled now: there is nothing cached yet that older rows could touch. */
  private async startFloor(): Promise<void> {
    const rows: Array<{ floor: number | string | null }> = await this.options.api.query(
      `SELECT MAX(\`id\`) AS \`floor\` FROM \`${CHANGE_LOG_TABLE}\` WHERE \`created_at\` < NOW(6) - INTERVAL ${SETTLE_S} SECOND`,
    );
    this.floor = Number(rows[0]?.floor ?? 0);
    this.delivered.clear();
  }

  /**
   * Lists the rows above the floor, page by page, delivers those not delivered yet, and moves the
   * floor up past the rows settled without a gap of unsettled ones below them.
   */
  private async readNewRows(): Promise<void> {
    const floor = this.floor ?? 0;
    let maxDelivered = floor;
    for (const id of this.delivered) if (id > maxDelivered) maxDelivered = id;
    let next = floor;
    let settledSoFar = true;
    for (let from = floor; ; ) {
      const rows = await this.listPage(from, maxDelivered);
      for (const row of rows) {
        if (row.payload !== null && !this.delivered.has(row.id)) {
          this.delivered.add(row.id);
          this.deliver(row.payload);
        }
        settledSoFar &&= row.settled;
        if (settledSoFar) next = row.id;
      }
      if (rows.length < BATCH) break;
      from = rows[rows.length - 1]!.id;
    }
    this.floor = next;
    for (const id of this.delivered) if (id <= next) this.delivered.delete(id);
  }

  /**
   * Up to BATCH rows above `from`, in id order: payloads of rows above `maxDelivered`, and of rows
   * below it not delivered yet (committed late, fetched by a second query); null for the others.
   */
  private async listPage(from: number, maxDelivered: number): Promise<Array<{ id: number; payload: string | null; settled: boolean }>> {
    const listed: ListedRow[] = await this.options.api.query(
      `SELECT \`id\`, IF(\`id\` > ?, \`payload\`, NULL) AS \`payload\`,
              \`created_at\` < NOW(6) - INTERVAL ${SETTLE_S} SECOND AS \`settled\`
         FROM \`${CHANGE_LOG_TABLE}\` WHERE \`id\` > ? ORDER BY \`id\` LIMIT ${BATCH}`,
      [maxDelivered, from],
    );
    const rows = listed.map((row) => ({ id: Number(row.id), payload: row.payload, settled: Number(row.settled) === 1 }));
    const late = rows.filter((row) => row.payload === null && !this.delivered.has(row.id)).map((row) => row.id);
    if (late.length > 0) {
      const fetched: Array<{ id: number | string; payload: string }> = await this.options.api.query(
        `SELECT \`id\`, \`payload\` FROM \`${CHANGE_LOG_TABLE}\` WHERE \`id\` IN (${late.map(() => '?').join(', ')})`,
        late,
      );
      const byId = new Map(fetched.map((row) => [Number(row.id), row.payload]));
      for (const row of rows) if (row.payload === null) row.payload = byId.get(row.id) ?? null;
    }
    return rows;
  }

  /** Deletes rows older than RETENTION_S (any process may; each deletes at most PRUNE_BATCH). */
  private async prune(): Promise<void> {
    this.nextPrune = performance.now() + jitter(PRUNE_EVERY_MS);
    await this.options.api.query(
      `DELETE FROM \`${CHANGE_LOG_TABLE}\` WHERE \`created_at\` < NOW(6) - INTERVAL ${RETENTION_S} SECOND LIMIT ${PRUNE_BATCH}`,
    );
  }

  private deliver(payload: string): void {
    try {
      this.options.onPayload(payload);
    } catch {
      // A handler's failure never stops the poller.
    }
  }

  private reachable(): void {
    this.up = true;
    this.listening = true;
    this.options.onUp(this.everUp);
    this.everUp = true;
  }

  /** Polling failed, or rows may have been missed: report it; the next answering poll resyncs. */
  private lost(): void {
    if (this.up) this.reconnects++;
    this.up = false;
    this.listening = false;
    this.options.onDown();
  }
}

function jitter(ms: number): number {
  return ms * (0.5 + Math.random());
}
