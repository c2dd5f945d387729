import * as nodeModule from 'node:module';

// Imported first by main.ts: Node's on-disk compile cache (Node 22.1 and later; absent on Node 20)
// spares each CLI run most of the time spent compiling TypeORM and the CLI's own modules, the
// larger part of a short command's start-up. The cache lives in the OS temp folder; a failure to
// use it only costs that time. TypeScript's own CLI does the same.
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();
