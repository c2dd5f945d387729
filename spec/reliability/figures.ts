import { appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One measured figure of a reliability scenario. */
export interface Figure {
  scenario: string;
  name: string;
  value: number;
  /** What the figure must satisfy, in words, e.g. 'must be 0' or '<= 20'. */
  bound: string;
}

/** Where figures of this run are appended as JSON lines (`CELLS_FIGURES_FILE` overrides). */
export const FIGURES_FILE = process.env.CELLS_FIGURES_FILE ?? join(tmpdir(), 'typeorm-cells-figures.jsonl');

/**
 * Prints a scenario's figure as one line `FIGURE <scenario> | <name> = <value> (<bound>)` on
 * stdout (straight to the stream, so Jest shows it without a console stack) and appends it to
 * FIGURES_FILE for docs/RELIABILITY.md. The test still asserts the bound itself.
 */
export function reportFigure(scenario: string, name: string, value: number, bound: string): void {
  const figure: Figure = { scenario, name, value, bound };
  process.stdout.write(`FIGURE ${scenario} | ${name} = ${value} (${bound})\n`);
  try {
    appendFileSync(FIGURES_FILE, `${JSON.stringify({ ...figure, at: new Date().toISOString() })}\n`);
  } catch {
    // The stdout line is the record that matters; a read-only tmpdir must not fail the test.
  }
}
