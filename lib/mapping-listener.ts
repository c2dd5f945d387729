import { Client, type ClientConfig } from 'pg';
import type { DataSource } from 'typeorm';
import type { PostgresConnectionCredentialsOptions } from 'typeorm/driver/postgres/PostgresConnectionCredentialsOptions';
import { endClient } from './connection-pool';
import { DEFAULTS } from './data-source-options';

/**
 * How a change to the mappings reaches every process: writers `pg_notify` an encoded
 * MappingChange on MAPPINGS_CHANNEL, and each process's MappingListener (a dedicated LISTEN
 * connection, reconnecting with backoff) hands the payloads to its CellMappings, which drops
 * what the change touched from its MappingCache.
 */

/** A committed change to the mappings, as sent to every process. Never carries a connection string. @internal */
export type MappingChange =
  | { kind: 'cell'; uuid: string; names: string[]; reconnect: boolean; deleted: boolean }
  | { kind: 'instance'; uuid: string }
  | { kind: 'host'; host: string }
  /** Migrations were applied to the cell: processes check its schema again (`requireSchema`). */
  | { kind: 'schema'; uuid: string };

/** The PostgreSQL channel writers notify and every process listens on. @internal */
export const MAPPINGS_CHANNEL = 'typeorm_cells_mappings';

/** What the listener reports to its owner. @internal */
export interface MappingListenerOptions {
  /** Connection of the API database; never logged. */
  connection: ClientConfig;
  /** A notification payload from any process, this one included. */
  onPayload(payload: string): void;
  /** Listening (again); `afterOutage` is false for the first connection. */
  onUp(afterOutage: boolean): void;
  /** The connection was lost or could not be made; notifications may be missed until `onUp`. */
  onDown(): void;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;

/** How long `stop()` waits for the server to let the LISTEN connection go before closing its socket. */
const LISTENER_CLOSE_WAIT_MS = 1_000;

/**
 * A dedicated pg Client that LISTENs for mapping changes, reconnecting with exponential backoff
 * when its connection drops. Its timers never keep the process alive; `stop()` closes it. @internal
 */
export class MappingListener {
  private client: Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private stopped = false;
  private everUp = false;
  /** Ends of lost connections still under way: `stop()` waits for them, so no socket outlives it. */
  private readonly ending = new Set<Promise<void>>();
  /** True while connected and listening. */
  listening = false;
  /** Connections lost after having listened. */
  reconnects = 0;

  constructor(private readonly options: MappingListenerOptions) {}

  /** Connects and listens; resolves after the first attempt, retrying in the background if it failed. */
  async start(): Promise<void> {
    await this.connect();
  }

  /** Closes the connection and cancels any retry. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    this.listening = false;
    // Bounded: an API server that stopped answering never acknowledges the close.
    if (client !== undefined) this.end(client);
    await Promise.all(this.ending);
  }

  /** Ends `client` (bounded, see endClient), tracked until done. */
  private end(client: Client): void {
    const ended = endClient(client, LISTENER_CLOSE_WAIT_MS).finally(() => this.ending.delete(ended));
    this.ending.add(ended);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let client: Client;
    try {
      client = new Client(this.options.connection);
    } catch {
      // Run from a timer: a throw here would be an unhandled rejection that ends the process.
      this.retry();
      return;
    }
    this.client = client;
    client.on('error', () => this.lost(client));
    client.on('end', () => this.lost(client));
    client.on('notification', (message) => {
      if (message.channel === MAPPINGS_CHANNEL && message.payload !== undefined)
        this.options.onPayload(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${MAPPINGS_CHANNEL}`);
    } catch {
      this.lost(client);
      return;
    }
    // Stopped while connecting: stop() has ended it.
    if (this.client !== client || this.stopped) return;
    this.failures = 0;
    this.listening = true;
    this.options.onUp(this.everUp);
    this.everUp = true;
  }

  private lost(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    if (this.listening) this.reconnects++;
    this.listening = false;
    this.options.onDown();
    this.end(client);
    this.retry();
  }

  /** Connects again after a backoff, unless stopped. */
  private retry(): void {
    if (this.stopped) return;
    const backoff = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** this.failures++);
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void this.connect();
      },
      backoff * (0.5 + Math.random() / 2),
    );
    this.timer.unref();
  }
}

/** Encodes a change for pg_notify, tagged with the writer so it can skip its own. @internal */
export function encodeChange(origin: string, change: MappingChange): string {
  return JSON.stringify({ origin, change });
}

/**
 * Decodes a notification payload; `undefined` when it is not a change this version understands,
 * in which case the caller drops the whole cache.
 * @internal
 */
export function decodeChange(
  payload: string,
): { origin: string; change: MappingChange } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { origin, change } = parsed as {
    origin?: unknown;
    change?: Partial<Record<string, unknown>>;
  };
  if (typeof origin !== 'string' || typeof change !== 'object' || change === null) return undefined;
  if (change.kind === 'cell' && typeof change.uuid === 'string' && Array.isArray(change.names)) {
    const names = change.names.filter((n): n is string => typeof n === 'string');
    return {
      origin,
      change: {
        kind: 'cell',
        uuid: change.uuid,
        names,
        reconnect: change.reconnect === true,
        deleted: change.deleted === true,
      },
    };
  }
  if (change.kind === 'instance' && typeof change.uuid === 'string')
    return { origin, change: { kind: 'instance', uuid: change.uuid } };
  if (change.kind === 'schema' && typeof change.uuid === 'string')
    return { origin, change: { kind: 'schema', uuid: change.uuid } };
  if (change.kind === 'host' && typeof change.host === 'string')
    return { origin, change: { kind: 'host', host: change.host } };
  return undefined;
}

/** pg Client options for the listener, from the API DataSource's connection options. @internal */
export function listenerConfig(api: DataSource): ClientConfig {
  const o = api.options as PostgresConnectionCredentialsOptions & { connectTimeoutMS?: number };
  return {
    ...(o.url === undefined ? {} : { connectionString: o.url }),
    host: o.host,
    port: o.port,
    user: o.username,
    password: o.password,
    database: o.database,
    ssl: o.ssl as ClientConfig['ssl'],
    connectionTimeoutMillis: o.connectTimeoutMS ?? DEFAULTS.listenerConnectTimeoutMs,
    keepAlive: true,
    application_name: 'typeorm-cells mapping listener',
  };
}
