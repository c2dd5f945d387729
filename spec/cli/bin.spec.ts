import { execSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../../dev/repo-root';

/**
 * `npx typeorm-cells` in a clone links the package's own bin once and runs the file it points at:
 * tsc writes it without the executable bit, so after a fresh build (`npm pack`'s prepack removes
 * dist/) npx failed with "sh: 1: typeorm-cells: Permission denied" (exit 127). `npm run build`
 * runs `postbuild`, which must make every bin executable again.
 */
it('the postbuild script makes the bins of package.json executable', () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
    bin: Record<string, string>;
    scripts: Record<string, string | undefined>;
  };
  expect(pkg.scripts.postbuild).toEqual(expect.any(String));
  const dir = mkdtempSync(join(tmpdir(), 'cells-bin-'));
  try {
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ bin: pkg.bin }));
    for (const file of Object.values(pkg.bin)) {
      mkdirSync(join(dir, dirname(file)), { recursive: true });
      writeFileSync(join(dir, file), '#!/usr/bin/env node\n');
      chmodSync(join(dir, file), 0o644); // as tsc leaves a file it creates
    }
    execSync(pkg.scripts.postbuild!, { cwd: dir, stdio: 'pipe' });
    for (const file of Object.values(pkg.bin)) {
      expect({ file, mode: (statSync(join(dir, file)).mode & 0o777).toString(8) }).toEqual({ file, mode: '755' });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
