import type { WriteStream } from 'node:tty';
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
    this.streams.out.write(`${printable(maskSecrets(text), true)}\n`);
  }

  /** Writes `value` as indented JSON to stdout. */
  data(value: unknown): void {
    this.line(JSON.stringify(value, null, 2));
  }

  /**
   * Writes a table to stdout; no colours, so piped output stays plain text. On a terminal the table
   * fits its width: the `optional` columns are dropped first, then the widest columns wrap.
   * Piped output keeps every row on one line, for scripts.
   */
  table(head: string[], rows: (string | number)[][], options: { optional?: string[] } = {}): void {
    // Control characters escaped here, line breaks too: one row stays one line (piped).
    const cells = rows.map((row) => row.map((cell) => printable(maskSecrets(String(cell)), false)));
    const terminal = this.streams.out as Partial<Pick<WriteStream, 'isTTY' | 'columns'>>;
    const layout = terminal.isTTY
      ? fitColumns(
          head,
          cells,
          terminal.columns || DEFAULT_TERMINAL_COLUMNS,
          options.optional ?? [],
        )
      : undefined;
    const pick = (row: string[]): string[] =>
      layout ? layout.keep.map((i, k) => wrap(row[i] ?? '', layout.widths[k]! - 2)) : row;
    const table = new Table({
      head: pick(head),
      style: { head: [], border: [] },
      ...(layout ? { colWidths: layout.widths } : {}),
    });
    table.push(...cells.map(pick));
    this.streams.out.write(`${table.toString()}\n`);
  }

  /** Prints `value` as JSON with `--json`, else calls `human` to print it for people. */
  result(value: unknown, human: () => void): void {
    if (this.json) this.data(value);
    else human();
  }

  /** Writes `error: <message>` to stderr as one line. */
  error(message: string): void {
    this.streams.err.write(`error: ${printable(oneLine(maskSecrets(message)), false)}\n`);
  }

  /**
   * Writes `warning: <message>` to stderr as one line, masked (also under `--json`: stdout stays
   * data): something the user should know, not a failure.
   */
  warn(message: string): void {
    this.streams.err.write(`warning: ${printable(oneLine(maskSecrets(message)), false)}\n`);
  }

  /** Writes raw text to stderr, masked (stack traces under `--debug`). */
  debug(text: string): void {
    this.streams.err.write(`${printable(maskSecrets(text), true)}\n`);
  }
}

/**
 * Control characters (C0 and C1, DEL), bidirectional overrides and line/paragraph separators as
 * JSON writes them (`\u001b`), so that nothing printed acts on the terminal (an escape sequence
 * erasing lines, a cell name's `\r`), or reads in another order than it is stored; line breaks are
 * kept when `keepNewlines`. Names come from the API database, written by any code.
 */
export function printable(text: string, keepNewlines: boolean): string {
  return text.replace(keepNewlines ? UNPRINTABLE_BUT_NEWLINE : UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
// eslint-disable-next-line no-control-regex -- control characters are exactly what it matches
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex -- control characters are exactly what it matches
const UNPRINTABLE_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** Width assumed for a terminal that does not report its own. */
const DEFAULT_TERMINAL_COLUMNS = 100;
/** Narrowest a wrapped column gets: a uuid or a word still reads in 12 characters. */
const MIN_COLUMN_WIDTH = 12;

/**
 * Which columns of a table to show, and how wide (padding included), so that it fits `maxWidth`:
 * columns named in `optional` are dropped first, in that order; then the widest column shrinks,
 * its text wrapping, until the table fits or every column is at its minimum.
 */
export function fitColumns(
  head: readonly string[],
  rows: readonly (readonly string[])[],
  maxWidth: number,
  optional: readonly string[] = [],
): { keep: number[]; widths: number[] } {
  const natural = head.map(
    (title, i) =>
      Math.max(
        ...[title, ...rows.map((row) => row[i] ?? '')].flatMap((text) =>
          text.split('\n').map((l) => l.length),
        ),
      ) + 2,
  );
  let keep = head.map((_, i) => i);
  const total = (): number => keep.reduce((sum, i) => sum + widths[i]!, keep.length + 1);
  const widths = [...natural];
  for (const name of optional) {
    if (total() <= maxWidth) break;
    keep = keep.filter((i) => head[i] !== name);
  }
  while (total() > maxWidth) {
    const widest = keep.reduce((a, b) => (widths[b]! > widths[a]! ? b : a));
    const floor = Math.min(natural[widest]!, MIN_COLUMN_WIDTH);
    if (widths[widest]! <= floor) break;
    widths[widest] = Math.max(floor, widths[widest]! - (total() - maxWidth));
  }
  return { keep, widths: keep.map((i) => widths[i]!) };
}

/** `text` wrapped at spaces to lines of at most `width` characters; longer words are cut, not lost. */
function wrap(text: string, width: number): string {
  return text
    .split('\n')
    .flatMap((paragraph) => {
      const lines: string[] = [];
      let line = '';
      for (const word of paragraph.split(' ')) {
        const joined = line === '' ? word : `${line} ${word}`;
        if (joined.length <= width) {
          line = joined;
          continue;
        }
        if (line !== '') lines.push(line);
        line = word;
        while (line.length > width) {
          lines.push(line.slice(0, width));
          line = line.slice(width);
        }
      }
      return [...lines, line];
    })
    .join('\n');
}

/** Collapses whitespace and line breaks, so an error is always a single line. */
export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** A duration in ms for tables: `850 ms`, `12.3 s`. */
export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
