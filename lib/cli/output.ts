import Table from 'cli-table3';
import { maskSecrets } from '../connection-url';

/** Where the CLI writes; tests and embedders may pass their own streams. */
export interface OutputStreams {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

/**
 * Everything the CLI prints goes through here, and every string is passed through `maskSecrets`
 * on its way out, so a password in a connection URL or a driver message is never shown.
 */
export class Output {
  constructor(
    /** Print machine-readable JSON on stdout instead of tables and sentences. */
    readonly json: boolean,
    private readonly streams: OutputStreams = { out: process.stdout, err: process.stderr },
  ) {}

  /** Writes one line (or several) to stdout. */
  line(text: string): void {
    this.streams.out.write(`${maskSecrets(text)}\n`);
  }

  /** Writes `value` as indented JSON to stdout. */
  data(value: unknown): void {
    this.line(JSON.stringify(value, null, 2));
  }

  /** Writes a table to stdout; no colours, so piped output stays plain text. */
  table(head: string[], rows: (string | number)[][]): void {
    const table = new Table({ head, style: { head: [], border: [] } });
    table.push(...rows.map((row) => row.map((cell) => maskSecrets(String(cell)))));
    this.line(table.toString());
  }

  /** Prints `value` as JSON with `--json`, else calls `human` to print it for people. */
  result(value: unknown, human: () => void): void {
    if (this.json) this.data(value);
    else human();
  }

  /** Writes `error: <message>` to stderr as one line. */
  error(message: string): void {
    this.streams.err.write(`error: ${oneLine(maskSecrets(message))}\n`);
  }

  /** Writes raw text to stderr, masked (stack traces under `--debug`). */
  debug(text: string): void {
    this.streams.err.write(`${maskSecrets(text)}\n`);
  }
}

/** Collapses whitespace and line breaks, so an error is always a single line. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** A duration in ms for tables: `850 ms`, `12.3 s`. */
export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
