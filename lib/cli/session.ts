import { Cells } from '../cells';
import type { CellsOptions } from '../cells-options';
import { CellsError, MissingDriverError } from '../errors';
import { ConfigFileError } from './errors';
import { messageOf } from '../connection-errors';
import { findConfigFile, loadConfig } from './config';
import { Output } from './output';

/** The global options every command accepts. */
export interface GlobalOptions {
  config?: string;
  /** Longest wait for the config file to give its options, in ms; 0: no limit. */
  configTimeout?: number;
  json?: boolean;
  debug?: boolean;
}

/**
 * One run of the CLI: its global options, its output, and the config file loaded on first use
 * (so `--help` and usage errors never touch the config or a database).
 */
export class CliSession {
  readonly output: Output;
  private loaded: Promise<{ file: string; options: CellsOptions }> | undefined;

  constructor(readonly options: GlobalOptions) {
    this.output = new Output(options.json === true);
  }

  /** The config file's `CellsOptions`. @throws InvalidArgumentError; ConfigFileError. */
  async config(): Promise<CellsOptions> {
    return (await this.load()).options;
  }

  /**
   * The config's `telemetry` providers, when a command loaded the config; none otherwise (and
   * none when it failed to load). Never throws.
   */
  async telemetryProviders(): Promise<unknown[]> {
    if (this.loaded === undefined) return [];
    const telemetry = (await this.loaded.catch(() => undefined))?.options.telemetry || undefined;
    return [telemetry?.tracerProvider, telemetry?.meterProvider].filter((p) => p !== undefined);
  }

  private load(): Promise<{ file: string; options: CellsOptions }> {
    this.loaded ??= Promise.resolve().then(async () => {
      const file = findConfigFile(this.options.config);
      return { file, options: await loadConfig(file, this.options.configTimeout) };
    });
    return this.loaded;
  }

  /**
   * Runs `fn` with an initialized `Cells` over the config's API database, destroyed afterwards.
   * @throws CellUnreachableError when the API database cannot be reached.
   */
  async withCells<T>(fn: (cells: Cells) => Promise<T>): Promise<T> {
    const { file, options: config } = await this.load();
    let cells: Cells;
    try {
      // Mapping commands need no cell entities; only `db` commands open cell databases.
      cells = new Cells({ ...config, entities: config.entities ?? [], migrateApi: false });
    } catch (error) {
      // Anything else thrown here came from the config's own code (a getter of a nested option).
      // A driver package missing is not the config file's fault.
      if (error instanceof MissingDriverError) throw error;
      const message =
        error instanceof CellsError
          ? error.message.replace(/\.$/, '')
          : `its options could not be read: ${messageOf(error, 'no message')}`;
      throw new ConfigFileError(file, message, { cause: error });
    }
    await cells.initialize();
    try {
      return await fn(cells);
    } finally {
      await cells.destroy();
    }
  }
}
