import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/**
 * The repository's root: the nearest folder above this file that holds package.json, so it is the
 * same whether this file runs from its source (Jest) or compiled to dist-bench/dev/ (benchmarks).
 */
export const REPO_ROOT = rootAbove(__dirname);

function rootAbove(dir: string): string {
  for (let at = dir; ; at = dirname(at)) {
    if (existsSync(join(at, 'package.json'))) return at;
    if (dirname(at) === at) throw new Error(`no package.json above ${dir}`);
  }
}
