/** What each benchmark scenario returns: figures for latest-node<major>.json and a Markdown section. */
export interface ScenarioResult {
  id: string;
  title: string;
  /** Figures for bench/results/latest-node<major>.json. */
  data: Record<string, unknown>;
  /** Markdown (tables and a line on targets) for bench/results/latest-node<major>.md and the README. */
  markdown: string;
}

/**
 * A benchmark scenario. Each file in bench/scenarios/ exports one as `scenario`; `npm run bench`
 * runs them in `order`. `run(true)` is the smoke run of `--quick`: brief, no figure is meaningful.
 */
export interface Scenario {
  id: string;
  /** The scenario's number in the benchmark plan (1 = routing overhead ...). */
  order: number;
  run(quick: boolean): Promise<ScenarioResult>;
}
