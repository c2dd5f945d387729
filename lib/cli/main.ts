#!/usr/bin/env node
import './compile-cache';
import '../index';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { maskSecrets } from '../connection-url';
import {
  BadConnectionUrlError,
  CellInUseError,
  InvalidArgumentError,
  UnknownCellError,
} from '../errors';
import { registerApiDbCommands } from './api-db';
import { InvalidMigrationRunError, MigrationInterruptedError, signalExitStatus } from './errors';
import { registerCellCommands } from './cell';
import { DEFAULT_CONFIG_FILES, DEFAULT_CONFIG_TIMEOUT_MS } from './config';
import { registerDbCommands } from './db';
import { timeoutMs } from './option-parsers';
import { registerInstanceCommands } from './instance';
import { Output, oneLine, printable } from './output';
import { flushTelemetry } from './telemetry-flush';
import { CliSession, type GlobalOptions } from './session';

/** Exit statuses of the CLI, stable for scripts. */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130, terminated: 143 } as const;

const HELP_FOOTER = `
Config: ${DEFAULT_CONFIG_FILES.join(', ')} in the working directory, or --config <path>; it exports
(export default / module.exports) the Cells options: { api, entities, migrations, ... }.
TypeScript configs (.ts, .mts, .cts) are loaded with jiti; no typescript package is needed.

The config file must give its options within --config-timeout ms (default ${DEFAULT_CONFIG_TIMEOUT_MS}).

Exit status:
  0  success
  1  failure: a database is unreachable, a cell is unknown or in use, an instance is not
     mapped, some cells failed to migrate, or the config file fails to load or never settles
  2  usage error: unknown command or option, missing or malformed argument, no config file,
     or a migration run to resume whose journal was changed by hand
  130  db migrate --all or --resume interrupted by Ctrl-C (SIGINT); --resume continues it
  143  the same, stopped by SIGTERM (a CI system or container runtime cancelling the job)

Passwords in connection URLs are masked (***) in all output.`;

/**
 * Builds the `typeorm-cells` program. `session` is called by actions once the global options are
 * parsed; errors are thrown (exitOverride) so `main` decides the exit status.
 */
export function buildProgram(session: () => CliSession): Command {
  const program = new Command('typeorm-cells')
    .description(
      'Manage typeorm-cells mappings and databases, in the manner of nova-manage cell_v2.',
    )
    .option(
      '--config <path>',
      `config file (default: ${DEFAULT_CONFIG_FILES.join(' or ')} in the working directory)`,
    )
    .option(
      '--config-timeout <ms>',
      'wait at most this long for the config file to give its options (0: no limit)',
      timeoutMs,
      DEFAULT_CONFIG_TIMEOUT_MS,
    )
    .option('--json', 'print machine-readable JSON on stdout')
    .option('--debug', 'print stack traces of errors')
    .addHelpText('after', HELP_FOOTER)
    // Inherited by every subcommand registered below: one masked line per error, and a thrown
    // CommanderError instead of process.exit.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => process.stdout.write(printable(maskSecrets(text), true)),
      writeErr: (text) => process.stderr.write(printable(maskSecrets(text), true)),
      outputError: (text, write) => write(`${oneLine(text)}\n`),
    });
  const version = packageVersion();
  if (version !== undefined) program.version(version);
  registerApiDbCommands(program, session);
  registerDbCommands(program, session);
  registerCellCommands(program, session);
  registerInstanceCommands(program, session);
  return program;
}

/**
 * Runs the CLI on `argv` and returns the exit status; never throws, and prints one masked error
 * line (plus the stack under `--debug`) on failure.
 */
export async function main(argv: readonly string[] = process.argv): Promise<number> {
  let session: CliSession | undefined;
  const program = buildProgram(() => (session ??= new CliSession(program.opts<GlobalOptions>())));
  const unfinished = whenNothingIsLeftToRun();
  try {
    await Promise.race([program.parseAsync([...argv]), unfinished.promise]);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed its message (or the help / version).
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const output = session?.output ?? new Output(false);
    output.error(describeError(error));
    if (program.opts<GlobalOptions>().debug && error instanceof Error && error.stack)
      output.debug(error.stack);
    if (error instanceof MigrationInterruptedError) return signalExitStatus(error.signal);
    return isUsageError(error) ? EXIT.usage : EXIT.failure;
  } finally {
    unfinished.dispose();
    // What the command recorded, exported before the process ends (at most 2 s), on every exit path.
    await flushTelemetry((await session?.telemetryProviders()) ?? []);
  }
}

/**
 * A promise rejected when the event loop empties (`beforeExit`) while the command is still
 * running: what it awaits can then never settle, and the process would exit 0 having done nothing.
 * The rejection waits one turn (setImmediate), so a more precise error raised on the same event
 * (the config file's, see loadConfig) reaches `main` first.
 */
function whenNothingIsLeftToRun(): { promise: Promise<never>; dispose(): void } {
  let onEmptyLoop = (): void => undefined;
  const promise = new Promise<never>((_resolve, reject) => {
    onEmptyLoop = () => {
      setImmediate(() =>
        reject(
          new Error(
            'The command did not finish: something it awaited never settled and nothing was left to settle it; it may have done nothing, or only part of its work. Rerun with --debug and report it.',
          ),
        ),
      );
    };
  });
  process.on('beforeExit', onEmptyLoop);
  return { promise, dispose: () => process.off('beforeExit', onEmptyLoop) };
}

function isUsageError(error: unknown): boolean {
  return error instanceof InvalidArgumentError || error instanceof BadConnectionUrlError || error instanceof InvalidMigrationRunError;
}

function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { driverError?: { code?: unknown } } | null)?.driverError?.code;
  // 42P01 undefined_table (MySQL/MariaDB: ER_NO_SUCH_TABLE): the API database has no mapping
  // tables yet, or not those of this version (the fleet migration journal).
  if (code === '42P01' || code === 'ER_NO_SUCH_TABLE')
    return `${message}. Is the API database migrated? Run 'typeorm-cells api-db migrate'.`;
  // The library's hints name its API calls; on the command line, name the commands instead.
  if (error instanceof CellInUseError)
    return message.replace('pass { force: true }', 'pass --force');
  if (error instanceof UnknownCellError)
    return `Unknown cell '${error.cell}': no cell has this uuid or name. List cells with 'typeorm-cells cell list'.`;
  return message || (error instanceof Error ? error.name : 'unknown error');
}

function packageVersion(): string | undefined {
  // Compiled to dist/lib/cli/, run from source in lib/cli/.
  for (const file of [
    join(__dirname, '../../../package.json'),
    join(__dirname, '../../package.json'),
  ]) {
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'typeorm-cells') return pkg.version;
  }
  return undefined;
}

/**
 * How long the process may stay up after a command has finished, in ms. Every command closes what
 * it opened, so the process normally ends at once; a handle left open (a socket a server never lets
 * go) must not keep a finished command running for ever.
 */
const EXIT_GRACE_MS = 5_000;

if (require.main === module) {
  void main().then((status) => {
    process.exitCode = status;
    // Unref'd: it fires only when something else still keeps the process alive.
    setTimeout(() => process.exit(status), EXIT_GRACE_MS).unref();
  });
}
