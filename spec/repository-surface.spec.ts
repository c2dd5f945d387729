import { Repository } from 'typeorm';
import { METADATA_METHODS, OWN_METHODS, ROUTED_METHODS } from '../lib/repository';

describe('routed repository surface', () => {
  it('covers every method of TypeORM Repository, so a new TypeORM method cannot bypass routing', () => {
    const typeorm = Object.getOwnPropertyNames(Repository.prototype).filter(
      (name) => name !== 'constructor' && typeof Object.getOwnPropertyDescriptor(Repository.prototype, name)?.value === 'function',
    );
    const covered = new Set<string>([...ROUTED_METHODS, ...METADATA_METHODS, ...OWN_METHODS]);
    expect(typeorm.filter((name) => !covered.has(name))).toEqual([]);
    expect([...covered].filter((name) => !typeorm.includes(name))).toEqual([]);
  });
});
