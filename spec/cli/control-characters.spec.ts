import { assertCliBuilt, createCliWorld, createSentinelRole, runCli, type CliWorld, type SentinelRole } from '../support/cli';

// A cell name is any string the API accepts (only NUL is refused), written by whatever code maps
// cells. Printed raw, its control characters act on the operator's terminal (an escape sequence
// erases or rewrites lines, sets the window title) and a newline splits one table row in two, so
// `cell list | grep` and the human reading `db fleet-status` see rows that are not there.
let role: SentinelRole;
let world: CliWorld;
/** ESC [1A ESC [2K: cursor up, erase the line; then a line break and a fake row. */
const HOSTILE = 'evil\u001b[1A\u001b[2K\r\nfake-cell | up to date\u0007\u009b2J\u202e';

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
  world = await createCliWorld('cli_ctrl', role, 1);
}, 60_000);

afterAll(async () => {
  await world?.destroy();
  await role?.drop().catch(() => undefined);
}, 60_000);

/** No C0/C1 control character but the line breaks ending lines, no bidi override. */
function expectPrintable(text: string): void {
  // eslint-disable-next-line no-control-regex -- control characters are what it looks for
  expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
}

it('prints cell names with control characters escaped, each row on one line (list, set-state, errors)', async () => {
  const uuid = await world.mapCell(HOSTILE, world.cells[0]!.url);
  const listed = await runCli(['cell', 'list'], world.project.dir);
  expect(listed.code).toBe(0);
  expectPrintable(listed.stdout);
  expect(listed.stdout).not.toMatch(/^fake-cell/m);
  expect(listed.stdout.split('\n').filter((line) => line.includes(uuid))).toHaveLength(1);
  expect(listed.stdout).toContain('evil\\u001b[1A');

  const set = await runCli(['cell', 'set-state', uuid, 'read-only'], world.project.dir);
  expect(set.code).toBe(0);
  expectPrintable(set.stdout + set.stderr);

  const refused = await runCli(['cell', 'set-state', uuid, `paused\u001b]0;owned\u0007`], world.project.dir);
  expect(refused.code).not.toBe(0);
  expectPrintable(refused.stdout + refused.stderr);

  for (const args of [['db', 'migrate', '--all'], ['db', 'fleet-status'], ['cell', 'list', `--bogus\u001b[2J`]]) {
    const result = await runCli(args, world.project.dir);
    expectPrintable(result.stdout + result.stderr);
  }

  const asJson = await runCli(['cell', 'list', '--json'], world.project.dir);
  expect((JSON.parse(asJson.stdout) as { name: string }[]).map((c) => c.name)).toContain(HOSTILE);
}, 55_000);
