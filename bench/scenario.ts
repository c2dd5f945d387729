/** What each benchmark scenario returns: figures for latest.json and a Markdown section. */
export interface ScenarioResult {
  id: string;
  title: string;
  /** Figures for bench/results/latest.json. */
  data: Record<string, unknown>;
  /** Markdown (tables and a line on targets) for bench/results/latest.md and the README. */
  markdown: string;
}

/** A scenario takes `quick` (smoke run) and returns its result. */
export type Scenario = (quick: boolean) => Promise<ScenarioResult>;
