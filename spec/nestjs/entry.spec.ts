import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BUILD_ERROR_VARIABLE } from '../support/build';

const ROOT = join(__dirname, '..', '..');

/** The @nestjs modules in require.cache after a fresh Node process requires `entry` (a dist/ file). */
async function nestModulesLoadedBy(entry: string): Promise<string[]> {
  const program = `require(${JSON.stringify(join(ROOT, entry))});
console.log(JSON.stringify(Object.keys(require.cache).filter((file) => /[\\\\/]node_modules[\\\\/]@nestjs[\\\\/]/.test(file))));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', program], { cwd: ROOT });
  return JSON.parse(stdout) as string[];
}

describe('the entry points', () => {
  beforeAll(() => {
    const buildError = process.env[BUILD_ERROR_VARIABLE];
    if (buildError) throw new Error(buildError);
  });

  it('loads nothing from @nestjs through the main entry', async () => {
    expect(await nestModulesLoadedBy('dist/lib/index.js')).toEqual([]);
  });

  it('loads @nestjs/common and @nestjs/core through typeorm-cells/nestjs', async () => {
    const loaded = await nestModulesLoadedBy('dist/lib/nestjs/index.js');
    expect(loaded.some((file) => file.includes(join('@nestjs', 'common')))).toBe(true);
    expect(loaded.some((file) => file.includes(join('@nestjs', 'core')))).toBe(true);
  });
});
