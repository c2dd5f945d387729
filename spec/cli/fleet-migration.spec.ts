import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import {
  CLI_PATH,
  assertCliBuilt,
  cliTranscript,
  createCliWorld,
  createSentinelRole,
  runCli,
  type CliResult,
  type CliWorld,
  type SentinelRole,
} from '../support/cli';
import { rowsIn } from '../support/databases';
import {
  FLEET_MIGRATIONS,
  cellRecord,
  maxOverlap,
  migrationSpan,
  readJournal,
  writeFleetConfig,
  type JournalCell,
} from '../support/fleet';
import { eventually } from '../support/peers';

let role: SentinelRole;
let world: CliWorld | undefined;

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
});

afterEach(async () => {
  await world?.destroy();
  world = undefined;
});

afterAll(async () => {
  await role?.drop().catch(() => undefined);
});

function apiUrlOf(w: CliWorld): string {
  return role.urlFor(w.api.name);
}

/** Starts the built CLI in the background, as a deploy job would; `exited` resolves with its result. */
function startCli(
  args: readonly string[],
  cwd: string,
): { kill(signal: NodeJS.Signals): void; stderr(): string; exited: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI_PATH, ...args], { cwd, env: { ...process.env, NO_COLOR: '1' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<CliResult>((resolve) =>
    child.on('close', (code, signal) => resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : -1), stdout, stderr })),
  );
  return { kill: (signal) => child.kill(signal), stderr: () => stderr, exited };
}

/** Waits until the journal of the newest run has at least `succeeded` cells done and `running` running. */
async function untilMidRun(apiUrl: string, succeeded: number, running = 1): Promise<void> {
  await eventually(async () => {
    const { cells } = await readJournal(apiUrl).catch(() => ({ cells: [] as JournalCell[] }));
    const count = (state: string): number => cells.filter((c) => c.state === state).length;
    return count('succeeded') >= succeeded && count('running') >= running;
  }, 30_000);
}

describe('db migrate --all, journaled', () => {
  it('resumes a run SIGKILLed mid-way over 20 cells: each migration applied once per cell, no finished cell re-run', async () => {
    world = await createCliWorld('fleet_kill', role, 20);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 400 });
    const started = performance.now();
    const cli = startCli(['--config', config, 'db', 'migrate', '--all', '--concurrency', '4'], world.project.dir);
    await untilMidRun(apiUrlOf(world), 4);
    cli.kill('SIGKILL');
    expect((await cli.exited).code).toBe(137);
    const killedAt = performance.now();

    const atKill = await readJournal(apiUrlOf(world));
    expect(atKill.runs.map((r) => r.state)).toEqual(['running']);
    const doneBefore = atKill.cells.filter((c) => c.state === 'succeeded').map((c) => c.cell_uuid);
    const runningAtKill = atKill.cells.filter((c) => c.state === 'running').map((c) => c.cell_uuid);
    expect(doneBefore.length).toBeGreaterThanOrEqual(4);
    expect(doneBefore.length).toBeLessThan(20);
    expect(runningAtKill.length).toBeGreaterThan(0);

    const resumed = await runCli(['--config', config, 'db', 'migrate', '--resume', '--json'], world.project.dir);
    const resumedAt = performance.now();
    expect(resumed).toMatchObject({ code: 0, stderr: '' });
    const report = JSON.parse(resumed.stdout) as { run: { id: number; state: string }; cells: { uuid: string; result: string }[] };
    expect(report.run).toEqual({ id: atKill.runs[0]!.id, state: 'succeeded' });
    // Only the cells not done were worked on, and every one of them succeeded.
    expect(report.cells.map((c) => c.uuid).sort()).toEqual(world.cells.map((c) => c.uuid).filter((u) => !doneBefore.includes(u)).sort());
    expect(report.cells.every((c) => c.result === 'migrated')).toBe(true);

    for (const cell of world.cells) {
      const record = await cellRecord(cell.db.url);
      expect({ cell: cell.name, migrations: record.migrations, probes: record.probes.map((p) => p.migration).sort() }).toEqual({
        cell: cell.name,
        migrations: FLEET_MIGRATIONS,
        probes: [...FLEET_MIGRATIONS].sort(),
      });
    }
    const after = await readJournal(apiUrlOf(world));
    expect(after.runs.map((r) => r.state)).toEqual(['succeeded']);
    expect(after.cells).toHaveLength(20);
    for (const row of after.cells) {
      expect(row.state).toBe('succeeded');
      // Finished before the kill: one attempt. Running at the kill: run again (its transaction had
      // rolled back, or it finds nothing left). Pending: started once, by the resume.
      expect(row.attempts).toBe(runningAtKill.includes(row.cell_uuid) ? 2 : 1);
      expect(JSON.parse(row.applied)).toEqual(FLEET_MIGRATIONS);
    }
    console.log(
      `fleet kill/resume, 20 cells x 400 ms, --concurrency 4: killed after ${Math.round(killedAt - started)} ms ` +
        `(${doneBefore.length} done, ${runningAtKill.length} running), resume ${Math.round(resumedAt - killedAt)} ms, ` +
        `total ${Math.round(resumedAt - started)} ms`,
    );
  }, 120_000);

  it.each([
    ['Ctrl-C (SIGINT)', 130, 'SIGINT', 'Ctrl-C', 'fleet_int'],
    ['SIGTERM (a CI system or Kubernetes cancelling the job)', 143, 'SIGTERM', 'SIGTERM', 'fleet_term'],
  ] as const)('stops starting cells at %s, lets the running ones finish, exits %i, and --resume does the rest', async (_what, code, signal, again, label) => {
    world = await createCliWorld(label, role, 6);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 500 });
    const cli = startCli(['--config', config, 'db', 'migrate', '--all', '--concurrency', '2'], world.project.dir);
    await untilMidRun(apiUrlOf(world), 0);
    cli.kill(signal);
    const interrupted = await cli.exited;
    expect(interrupted.code).toBe(code);
    expect(interrupted.stderr).toMatch(
      new RegExp(`^warning: Interrupted \\(${signal}\\): starting no more cells, letting the running ones finish \\(${again} again to exit now\\)\\.$`, 'm'),
    );
    expect(interrupted.stderr).toMatch(/^error: Interrupted: migration run #\d+ stopped with \d+ cell\(s\) not done; run 'typeorm-cells db migrate --resume'/m);
    const journal = await readJournal(apiUrlOf(world));
    expect(journal.runs.map((r) => r.state)).toEqual(['interrupted']);
    // The running cells finished; the others were never started.
    expect(journal.cells.some((c) => c.state === 'running')).toBe(false);
    expect(journal.cells.filter((c) => c.state === 'succeeded').length).toBeGreaterThan(0);
    const pending = journal.cells.filter((c) => c.state === 'pending');
    expect(pending.length).toBeGreaterThan(0);
    for (const row of pending) expect((await cellRecord(world.cells.find((c) => c.uuid === row.cell_uuid)!.db.url)).migrations).toEqual([]);
    // The table says what the journal says: cells never started are `not started`, none `skipped`.
    for (const row of pending) expect(interrupted.stdout).toMatch(new RegExp(`│ ${row.cell_name} .*│ not started +│`));
    expect(interrupted.stdout).not.toMatch(/│ skipped/);

    const resumed = await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^Run #\d+: succeeded\.$/m);
    for (const cell of world.cells) expect((await cellRecord(cell.db.url)).migrations).toEqual(FLEET_MIGRATIONS);
    const repeat = await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir);
    expect(repeat).toMatchObject({ code: 0, stdout: 'Nothing to resume: every migration run has finished.\n' });
  }, 120_000);

  it('exits at once on a second Ctrl-C, leaving its running cells to --resume', async () => {
    world = await createCliWorld('fleet_int2', role, 4);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 2000 });
    const cli = startCli(['--config', config, 'db', 'migrate', '--all', '--concurrency', '2'], world.project.dir);
    await untilMidRun(apiUrlOf(world), 0, 2);
    cli.kill('SIGINT');
    await eventually(() => cli.stderr().includes('Interrupted (SIGINT): starting no more cells'), 10_000);
    const second = performance.now();
    cli.kill('SIGINT');
    const exited = await cli.exited;
    expect(exited.code).toBe(130);
    // Well before the running migrations' 2 s sleep ends.
    expect(performance.now() - second).toBeLessThan(1500);
    const journal = await readJournal(apiUrlOf(world));
    expect(journal.runs.map((r) => r.state)).toEqual(['running']);
    expect(exited.stderr.split('\n').filter((line) => line.includes(`#${journal.runs[0]!.id}`))).toEqual([
      `error: Run #${journal.runs[0]!.id} left running; resume with 'typeorm-cells db migrate --resume'.`,
    ]);
    const running = journal.cells.filter((c) => c.state === 'running').map((c) => c.cell_uuid);
    expect(running).toHaveLength(2);
    expect((await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir)).code).toBe(0);
    for (const cell of world.cells) expect((await cellRecord(cell.db.url)).migrations).toEqual(FLEET_MIGRATIONS);
    const after = await readJournal(apiUrlOf(world));
    expect(after.cells.map((c) => [c.state, c.attempts])).toEqual(
      after.cells.map((c) => ['succeeded', running.includes(c.cell_uuid) ? 2 : 1]),
    );
  }, 120_000);

  it('refuses --resume while another process is migrating the run, and touches nothing', async () => {
    world = await createCliWorld('fleet_busy', role, 2);
    // Long enough that the first process still runs when the resume, started after it, asks.
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 2500 });
    const first = startCli(['--config', config, 'db', 'migrate', '--all', '--concurrency', '1'], world.project.dir);
    await untilMidRun(apiUrlOf(world), 0);
    const resume = await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir);
    expect(resume).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/^error: Migration run #\d+ is being migrated by another process .* so nothing was started/),
    });
    // No cell was started a second time by the refused resume (the first process may have moved on).
    expect((await readJournal(apiUrlOf(world))).cells.every((c) => c.attempts <= 1)).toBe(true);
    expect((await first.exited).code).toBe(0);
    const after = await readJournal(apiUrlOf(world));
    expect(after.runs.map((r) => r.state)).toEqual(['succeeded']);
    expect(after.cells.map((c) => [c.state, c.attempts])).toEqual([['succeeded', 1], ['succeeded', 1]]);
  }, 60_000);

  it('stops the run when the canary fails: no other cell is touched', async () => {
    world = await createCliWorld('fleet_can', role, 5);
    const canary = world.cells[2]!;
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 50, failIn: [canary.db.name] });
    const result = await runCli(
      ['--config', config, 'db', 'migrate', '--all', '--canary', canary.name, '--continue-on-error', '--json'],
      world.project.dir,
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^error: The canary of migration run #\d+ failed \(1 of 1 canary cell\(s\)\), so the run stopped before its other waves: 4 cell\(s\) not started\. --continue-on-error does not go past a failed canary: fix it, then run 'typeorm-cells db migrate --resume'\.\n$/,
    );
    expect(result.stderr).not.toMatch(/pass --continue-on-error/);
    const report = JSON.parse(result.stdout) as { cells: { name: string; result: string; error?: string }[] };
    expect(report.cells.map((c) => [c.name, c.result])).toEqual([
      [canary.name, 'failed'],
      ...world.cells.filter((c) => c !== canary).map((c) => [c.name, 'skipped']),
    ]);
    expect(report.cells[0]!.error).toMatch(/this cell breaks the migration/);
    for (const cell of world.cells.filter((c) => c !== canary)) {
      expect(await cellRecord(cell.db.url)).toEqual({ migrations: [], probes: [] });
      // Not even connected to: no migrations table was created.
      expect(await rowsIn(cell.db.url, `SELECT to_regclass('public.migrations')::text AS t`)).toEqual([{ t: null }]);
    }
    const journal = await readJournal(apiUrlOf(world));
    expect(journal.runs.map((r) => r.state)).toEqual(['failed']);
    expect(journal.cells.map((c) => [c.cell_name, c.wave, c.state])).toEqual([
      [canary.name, 0, 'failed'],
      ...world.cells.filter((c) => c !== canary).map((c) => [c.name, 1, 'skipped']),
    ]);
    expect(journal.cells[0]!.error).toMatch(/this cell breaks the migration/);
  }, 60_000);

  it('migrates the canary, then waves of --wave-size, never more than --max-per-server cells of one server at once', async () => {
    world = await createCliWorld('fleet_wave', role, 9);
    // Cells 1, 3, 5, 7 reach the same server under another host name: two servers by host:port.
    for (const [i, cell] of world.cells.entries()) {
      if (i % 2 === 0) continue;
      const url = new URL(cell.url);
      url.hostname = url.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
      await rowsIn(apiUrlOf(world), 'UPDATE cell_mappings SET database_connection = $1 WHERE uuid = $2', [url.toString(), cell.uuid]);
    }
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 300 });
    const result = await runCli(
      ['--config', config, 'db', 'migrate', '--all', '--canary', '1', '--wave-size', '4', '--max-per-server', '1', '--concurrency', '4', '--json'],
      world.project.dir,
    );
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const spans = await Promise.all(world.cells.map(async (cell) => migrationSpan(await cellRecord(cell.db.url))));
    const journal = await readJournal(apiUrlOf(world));
    expect(journal.cells.map((c) => c.wave)).toEqual([0, 1, 1, 1, 1, 2, 2, 2, 2]);
    // Per server at most one at once; both servers at once (so the runner did run cells together).
    expect(maxOverlap(spans.filter((_, i) => i % 2 === 0))).toBe(1);
    expect(maxOverlap(spans.filter((_, i) => i % 2 === 1))).toBe(1);
    expect(maxOverlap(spans)).toBe(2);
    // Each wave starts after the one before it ended.
    const waves = [[0], [1, 2, 3, 4], [5, 6, 7, 8]].map((cells) => cells.map((i) => spans[i]!));
    for (let w = 1; w < waves.length; w++) {
      const previousEnd = Math.max(...waves[w - 1]!.map((s) => s.end.getTime()));
      expect(Math.min(...waves[w]!.map((s) => s.start.getTime()))).toBeGreaterThanOrEqual(previousEnd);
    }
  }, 60_000);

  it('prints a cell\'s start line (piped) when it really starts, not while it waits for its server slot', async () => {
    world = await createCliWorld('fleet_slot', role, 4);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 300 });
    const result = await runCli(['--config', config, 'db', 'migrate', '--all', '--concurrency', '4', '--max-per-server', '1'], world.project.dir);
    expect(result.code).toBe(0);
    const names = world.cells.map((c) => c.name);
    let open = 0;
    let most = 0;
    for (const line of result.stdout.split('\n')) {
      if (names.some((name) => line === `❯ ${name}`)) most = Math.max(most, ++open);
      if (names.some((name) => line.startsWith(`✔ ${name}: `))) open--;
    }
    // Two servers, one cell of each at once: never more than 2 cells started and not finished (the
    // fault printed all 4 at once). Whether both servers overlap depends on the machine's load: the
    // wave spec checks that they do.
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
    for (const name of names) expect(result.stdout).toContain(`❯ ${name}\n`);
  }, 60_000);

  it('points at api-db migrate when the API database has no journal yet (an upgrade), and migrates nothing', async () => {
    world = await createCliWorld('fleet_old', role, 1);
    await rowsIn(apiUrlOf(world), 'DROP TABLE cell_migration_run_cells, cell_migration_runs');
    for (const args of [['db', 'migrate', '--all'], ['db', 'migrate', '--resume'], ['db', 'fleet-status']]) {
      const result = await runCli(args, world.project.dir);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringMatching(/^error: .*cell_migration_run.* Is the API database migrated\? Run 'typeorm-cells api-db migrate'\.\n$/) });
    }
    expect((await cellRecord(world.cells[0]!.db.url)).migrations).toEqual([]);
  });

  it('a new --all supersedes older unfinished runs: --resume takes only the newest run, never an older one', async () => {
    world = await createCliWorld('fleet_sup', role, 2);
    const broken = world.cells[1]!;
    const failing = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 10, failIn: [broken.db.name] });
    for (let i = 0; i < 2; i++) {
      expect((await runCli(['--config', failing, 'db', 'migrate', '--all', '--continue-on-error'], world.project.dir)).code).toBe(1);
    }
    const [older, newer] = (await readJournal(apiUrlOf(world))).runs;
    expect([older!.state, newer!.state]).toEqual(['superseded', 'failed']);
    expect(older!.ended_at).not.toBeNull();
    const resumed = await runCli(['--config', failing, 'db', 'migrate', '--resume', '--json'], world.project.dir);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ run: { id: newer!.id, state: 'failed' } });
    const fixed = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 10 });
    const done = await runCli(['--config', fixed, 'db', 'migrate', '--resume', '--json'], world.project.dir);
    expect(JSON.parse(done.stdout)).toMatchObject({ run: { id: newer!.id, state: 'succeeded' } });
    const again = await runCli(['--config', fixed, 'db', 'migrate', '--resume'], world.project.dir);
    expect(again).toMatchObject({ code: 0, stdout: 'Nothing to resume: every migration run has finished.\n' });
    expect((await readJournal(apiUrlOf(world))).runs.map((r) => r.state)).toEqual(['superseded', 'succeeded']);
  }, 60_000);

  it('refuses --resume with plan options, and --canary with --cell (exit 2)', async () => {
    world = await createCliWorld('fleet_use', role, 1);
    const resume = await runCli(['db', 'migrate', '--resume', '--canary', '1'], world.project.dir);
    expect(resume).toMatchObject({ code: 2, stderr: expect.stringMatching(/^error: --resume continues a run with the options it started with/) });
    const cell = await runCli(['db', 'migrate', '--cell', world.cells[0]!.name, '--wave-size', '2'], world.project.dir);
    expect(cell).toMatchObject({ code: 2, stderr: expect.stringMatching(/^error: --canary, --wave-size and --max-per-server go with --all/) });
  });

  it('refuses --resume of a run whose journal holds invalid options or cell states (exit 2, naming the run), rather than hang', async () => {
    world = await createCliWorld('fleet_bad', role, 2);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 10, failIn: [world.cells[1]!.db.name] });
    const failed = await runCli(['--config', config, 'db', 'migrate', '--all', '--continue-on-error', '--json'], world.project.dir);
    expect(failed.code).toBe(1);
    const [run] = (await readJournal(apiUrlOf(world))).runs;
    const [{ options }] = (await rowsIn<{ options: string }>(apiUrlOf(world), 'SELECT options FROM cell_migration_runs WHERE id = $1', [run!.id])) as [
      { options: string },
    ];
    const setOptions = (changed: Record<string, unknown>) =>
      rowsIn(apiUrlOf(world!), 'UPDATE cell_migration_runs SET options = $1 WHERE id = $2', [JSON.stringify({ ...JSON.parse(options), ...changed }), run!.id]);
    for (const [changed, what] of [
      [{ maxPerServer: 0 }, /maxPerServer/],
      [{ concurrency: 1.5 }, /concurrency/],
      [{ waveSize: '2' }, /waveSize/],
    ] as const) {
      await setOptions(changed);
      const resumed = await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir, { timeoutMs: 20_000 });
      expect(resumed).toMatchObject({ code: 2, stderr: expect.stringMatching(new RegExp(`^error: Migration run #${run!.id} .*invalid`)) });
      expect(resumed.stderr).toMatch(what);
    }
    await setOptions({});
    await rowsIn(apiUrlOf(world), "UPDATE cell_migration_run_cells SET state = 'bogus' WHERE run_id = $1 AND state = 'failed'", [run!.id]);
    const bogus = await runCli(['--config', config, 'db', 'migrate', '--resume'], world.project.dir, { timeoutMs: 20_000 });
    expect(bogus).toMatchObject({ code: 2, stderr: expect.stringMatching(new RegExp(`^error: Migration run #${run!.id} .*unknown state`)) });
  });

  it('warns when --canary counts more cells than are mapped', async () => {
    world = await createCliWorld('fleet_can', role, 2);
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 10 });
    const result = await runCli(['--config', config, 'db', 'migrate', '--all', '--canary', '5', '--json'], world.project.dir);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/^warning: --canary 5 is more than the 2 cell\(s\) mapped: every cell is a canary/m);
  });
});

describe('db fleet-status', () => {
  it("shows each cell's schema version against the newest migration and its last run, as text and JSON", async () => {
    world = await createCliWorld('fleet_stat', role, 3);
    const [ok, broken, fresh] = world.cells as [CliWorld['cells'][0], CliWorld['cells'][0], CliWorld['cells'][0]];
    const config = await writeFleetConfig(world.project.dir, apiUrlOf(world), { sleepMs: 10, failIn: [broken.db.name] });
    const migrated = await runCli(['--config', config, 'db', 'migrate', '--all', '--continue-on-error'], world.project.dir);
    expect(migrated.code).toBe(1);
    // A cell mapped after the run: no run yet.
    await rowsIn(apiUrlOf(world), 'DELETE FROM cell_migration_run_cells WHERE cell_uuid = $1', [fresh.uuid]);
    const [probe, slow] = FLEET_MIGRATIONS as [string, string];

    const status = await runCli(['--config', config, 'db', 'fleet-status', '--json'], world.project.dir);
    expect(status).toMatchObject({ code: 0, stderr: '' });
    const report = JSON.parse(status.stdout) as { newest: string; cells: Record<string, unknown>[] };
    expect(report.newest).toBe(slow);
    const runId = (await readJournal(apiUrlOf(world))).runs[0]!.id;
    expect(report.cells).toEqual([
      { uuid: ok.uuid, name: ok.name, version: slow, newest: slow, pending: 0, lastRun: expect.objectContaining({ runId, state: 'succeeded', attempts: 1, error: null }) },
      {
        uuid: broken.uuid,
        name: broken.name,
        version: null,
        newest: slow,
        pending: 2,
        lastRun: expect.objectContaining({ runId, state: 'failed', error: expect.stringMatching(/this cell breaks the migration/) }),
      },
      { uuid: fresh.uuid, name: fresh.name, version: slow, newest: slow, pending: 0, lastRun: null },
    ]);
    expect(probe).toBe(FLEET_MIGRATIONS[0]);

    const text = await runCli(['--config', config, 'db', 'fleet-status'], world.project.dir);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`│ ${ok.name} +│ ${ok.uuid} │ ${slow} +│ up to date +│ #${runId} succeeded +│`));
    expect(text.stdout).toMatch(new RegExp(`│ ${broken.name} +│ ${broken.uuid} │ - +│ 2 migration\\(s\\) +│ #${runId} failed: .*this cell breaks the migration`));
    expect(text.stdout).toMatch(new RegExp(`│ ${fresh.name} +│ ${fresh.uuid} │ ${slow} +│ up to date +│ - +│`));
    expect(text.stdout).toMatch(new RegExp(`^Newest migration: ${slow}\\.$`, 'm'));

    // A cell whose version cannot be read: pending unknown (null), newest still the config's.
    await rowsIn(apiUrlOf(world), 'UPDATE cell_mappings SET database_connection = $1 WHERE uuid = $2', [role.urlFor('fleet_no_such_db'), fresh.uuid]);
    const unreadable = await runCli(['--config', config, 'db', 'fleet-status', '--json'], world.project.dir);
    expect(unreadable.code).toBe(1);
    const partial = JSON.parse(unreadable.stdout) as { newest: string; cells: Record<string, unknown>[] };
    expect(partial.newest).toBe(slow);
    expect(partial.cells[2]).toEqual({ uuid: fresh.uuid, name: fresh.name, version: null, newest: slow, pending: null, lastRun: null, error: expect.any(String) });
    const unreadableText = await runCli(['--config', config, 'db', 'fleet-status'], world.project.dir);
    expect(unreadableText.stdout).toMatch(new RegExp(`│ ${fresh.name} +│ ${fresh.uuid} │ unreadable \\(below\\) +│ unknown +│ - +│`));
    expect(unreadableText.stdout).toMatch(new RegExp(`^${fresh.name}: schema version unreadable: .*fleet_no_such_db.*does not exist`, 'm'));
    // The table stays as narrow as its cells' names and versions.
    const widest = Math.max(...unreadableText.stdout.split('\n').filter((line) => line.startsWith('│')).map((line) => line.length));
    expect(widest).toBeLessThan(200);
  }, 60_000);
});

describe('output', () => {
  it('never printed a password or a connection string, in any output of this file', () => {
    const printed = cliTranscript();
    expect(printed).not.toContain(role.password);
    expect(printed).not.toMatch(/postgres(?:ql)?:\/\//);
  });
});
