/** @type {import('jest').Config} */
module.exports = {
  // CELLS_LEAK_PROBE=<file>: spec/support/leak-probe-environment.ts records, in <file>, what each spec
  // file leaves running and which Jest worker outlives its end (see there).
  testEnvironment: process.env.CELLS_LEAK_PROBE ? '<rootDir>/spec/support/leak-probe-environment.ts' : 'node',
  roots: ['<rootDir>/spec'],
  testMatch: ['**/*.spec.ts'],
  transform: {
    // tsconfig.json sets isolatedModules, so ts-jest transpiles file by file; type errors
    // are caught by `npm run typecheck`, not by the test run.
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }],
  },
  // Not the default os.tmpdir()/jest_*: a test run leaves nothing in the OS temp directory.
  cacheDirectory: '<rootDir>/node_modules/.cache/jest',
  globalSetup: '<rootDir>/spec/support/global-setup.ts',
  globalTeardown: '<rootDir>/spec/support/global-teardown.ts',
  testTimeout: 60000,
  maxWorkers: 2,
};
