import { appendFileSync } from 'node:fs';

/** One measured figure of a reliability scenario. */
export interface Figure {
  scenario: string;
  name: string;
  value: number;
  /** What the figure must satisfy, in words, e.g. 'must be 0' or '<= 20'. */
  bound: string;
}

/** Where figures of this run are appended as JSON lines, when set (`CELLS_FIGURES_FILE`). */
export const FIGURES_FILE = process.env.CELLS_FIGURES_FILE;

/**
 * Prints a scenario's figure as one line `FIGURE <scenario> | <name> = <value> (<bound>)` on
 * stdout (straight to the stream, so Jest shows it without a console stack) and, when
 * `CELLS_FIGURES_FILE` names a file, appends it there for docs/RELIABILITY.md (nothing is written
 * by default: a run leaves no file behind). The test still asserts the bound itself.
 */
export function reportFigure(scenario: string, name: string, value: number, bound: string): void {
  const figure: Figure = { scenario, name, value, bound };
  process.stdout.write(`FIGURE ${scenario} | ${name} = ${value} (${bound})\n`);
  if (FIGURES_FILE === undefined) return;
  try {
    appendFileSync(FIGURES_FILE, `${JSON.stringify({ ...figure, at: new Date().toISOString() })}\n`);
  } catch {
    // The stdout line is the record that matters; a read-only tmpdir must not fail the test.
  }
}
