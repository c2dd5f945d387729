/**
 * A small benchmark harness on process.hrtime: variants of a scenario run interleaved (round-robin
 * in rotating order) after a warm-up, so drift in the machine or the server hits all of them alike.
 */

/** One variant of a scenario: an async operation timed one call at a time. */
export type Operation = () => Promise<unknown>;

/** Per-variant figures, in microseconds per operation. */
export interface VariantResult {
  name: string;
  ops: number;
  medianUs: number;
  p99Us: number;
  meanUs: number;
  /** Median divided by the baseline's median. */
  ratio: number;
}

/** How long to run. `quick` shrinks everything to a smoke run. */
export interface RunOptions {
  rounds: number;
  opsPerRound: number;
  warmupOps: number;
}

export function runOptions(quick: boolean, scale = 1): RunOptions {
  return quick
    ? { rounds: 2, opsPerRound: Math.max(5, Math.round(20 * scale)), warmupOps: 10 }
    : { rounds: 30, opsPerRound: Math.max(10, Math.round(200 * scale)), warmupOps: Math.round(500 * scale) };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[index]!;
}

/** Summarises nanosecond samples. */
export function summarise(name: string, samplesNs: number[], baselineMedianUs?: number): VariantResult {
  const sorted = Float64Array.from(samplesNs).sort();
  const medianUs = percentile(sorted, 0.5) / 1000;
  const sum = samplesNs.reduce((a, b) => a + b, 0);
  return {
    name,
    ops: samplesNs.length,
    medianUs,
    p99Us: percentile(sorted, 0.99) / 1000,
    meanUs: sum / samplesNs.length / 1000,
    ratio: baselineMedianUs === undefined ? 1 : medianUs / baselineMedianUs,
  };
}

/**
 * Times each variant one operation at a time, interleaved; ratios are against `baseline`.
 */
export async function compare(
  variants: Record<string, Operation>,
  baseline: string,
  options: RunOptions,
): Promise<VariantResult[]> {
  const names = Object.keys(variants);
  for (const name of names) for (let i = 0; i < options.warmupOps; i++) await variants[name]!();
  const samples = new Map<string, number[]>(names.map((n) => [n, []]));
  for (let round = 0; round < options.rounds; round++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(round + k) % names.length]!;
      const op = variants[name]!;
      const bucket = samples.get(name)!;
      for (let i = 0; i < options.opsPerRound; i++) {
        const start = process.hrtime.bigint();
        await op();
        bucket.push(Number(process.hrtime.bigint() - start));
      }
    }
  }
  const base = summarise(baseline, samples.get(baseline)!);
  return names.map((n) => summarise(n, samples.get(n)!, base.medianUs));
}

/** Nanoseconds per call of a synchronous function, over `iterations` calls (best of 5 batches). */
export function nsPerCall(fn: () => void, iterations: number): number {
  let best = Infinity;
  for (let batch = 0; batch < 5; batch++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - start) / iterations);
  }
  return best;
}

/** Formats rows as a Markdown table. */
export function markdownTable(headers: string[], rows: Array<Array<string | number>>): string {
  const cell = (v: string | number) => (typeof v === 'number' ? formatNumber(v) : v);
  return [
    `| ${headers.join(' | ')} |`,
    `| ${headers.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(3);
}
