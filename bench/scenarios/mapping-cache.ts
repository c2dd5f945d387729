import type { Agent } from 'node:http';
import type { Repository } from 'typeorm';
import type { Cells } from '../../lib';
import { createApp } from '../../examples/express/app';
import { Server } from '../../examples/express/entities/Server';
import { QueryCounter } from '../../spec/support/peers';
import { compare, markdownTable, runOptions, type Operation } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { createExampleApp, type ExampleApp } from '../../spec/support/example-app';
import { getOk, keepAliveAgent, listen, type Listening } from '../support-http';

const CELLS = 2;

/** The four ways `GET /servers/:uuid` is looked up, each a function of the server uuid. */
type Lookup = (uuid: string) => Promise<unknown>;

interface Path {
  cells: Cells;
  http: Listening;
  agent: Agent;
  lookups: Record<VariantName, Lookup>;
}

const VARIANTS = [
  'library, cache hit',
  'library, cache miss',
  'HTTP, cache hit',
  'HTTP, cache miss',
] as const;
type VariantName = (typeof VARIANTS)[number];
const isMiss = (name: VariantName) => name.endsWith('miss');

/** The bare library call and the example app's handler, over one `Cells`. */
async function openPath(cells: Cells): Promise<Path> {
  const servers: Repository<Server> = cells.getRepository(Server);
  const http = await listen(createApp(cells, { log: (line) => process.stderr.write(`${line}\n`) }));
  const agent = keepAliveAgent();
  const library: Lookup = async (uuid) => {
    const found = await cells.targetInstanceCell(uuid, () => servers.findOneBy({ uuid }));
    if (found === null) throw new Error(`server ${uuid} not found`);
  };
  const viaHttp: Lookup = (uuid) => getOk(agent, http.port, `/servers/${uuid}`);
  return {
    cells,
    http,
    agent,
    lookups: {
      'library, cache hit': library,
      'library, cache miss': library,
      'HTTP, cache hit': viaHttp,
      'HTTP, cache miss': viaHttp,
    },
  };
}

/** Hands out uuids: hits rotate over warmed servers, misses take a server never looked up. */
function uuidSource(hot: readonly string[], fresh: readonly string[]) {
  let h = 0;
  let f = 0;
  return {
    hit: () => hot[(h = (h + 1) % hot.length)]!,
    miss: () => {
      const uuid = fresh[f++];
      if (uuid === undefined) throw new Error('ran out of never-looked-up servers: seed more');
      return uuid;
    },
    get missesUsed() {
      return f;
    },
  };
}

/**
 * Scenario 2: `GET /servers/:uuid` when the instance mapping is cached against when it is not, as
 * the bare `targetInstanceCell` call and through the example app: round trips per request (counted
 * by TypeORM loggers on the API and cell DataSources) and latency. A miss is a server whose mapping
 * this process has never looked up (seeded behind the cache, as another process would have mapped
 * it); the cell's own mapping stays cached, as it does in a running service.
 */
async function mappingCache(quick: boolean): Promise<ScenarioResult> {
  const world = await createExampleApp('bench_mapcache', { cellCount: CELLS });
  const agents: Agent[] = [];
  const servers: Listening[] = [];
  try {
    const options = runOptions(quick, 0.25);
    const countedOps = quick ? 10 : 100;
    const missesNeeded =
      2 * (options.warmupOps + options.rounds * options.opsPerRound) + 2 * countedOps;
    const hot = await world.seed(quick ? 20 : 200);
    const fresh = await world.seed(missesNeeded);

    const roundTrips = await countRoundTrips(
      world,
      hot,
      fresh.slice(0, 2 * countedOps),
      countedOps,
    );

    // Timed on an instance without loggers: the masking logger proxy is not on the hot path.
    const path = await openPath(await world.open());
    servers.push(path.http);
    agents.push(path.agent);
    await warm(path, hot);
    const uuids = uuidSource(hot, fresh.slice(2 * countedOps));
    const before = path.cells.mappings.cacheStats();
    const variants = Object.fromEntries(
      VARIANTS.map((name): [string, Operation] => {
        const lookup = path.lookups[name];
        return [name, isMiss(name) ? () => lookup(uuids.miss()) : () => lookup(uuids.hit())];
      }),
    );
    const timed = await compare(variants, 'library, cache hit', options);
    const after = path.cells.mappings.cacheStats();
    const loads = after.loads - before.loads;
    const hitsWereHits = loads === uuids.missesUsed;

    const rows = VARIANTS.map((name) => {
      const t = timed.find((r) => r.name === name)!;
      const rt = roundTrips[name];
      return { name, ...rt, medianUs: t.medianUs, p99Us: t.p99Us, ratio: t.ratio };
    });
    const expected = (name: VariantName) =>
      isMiss(name) ? { api: 1, cell: 1 } : { api: 0, cell: 1 };
    const roundTripsMet = rows.every(
      (r) => r.api === expected(r.name).api && r.cell === expected(r.name).cell,
    );
    const missCost = (miss: VariantName, hit: VariantName) =>
      timed.find((r) => r.name === miss)!.medianUs - timed.find((r) => r.name === hit)!.medianUs;
    return {
      id: 'mapping-cache',
      title: '2. Mapping cache: GET /servers/:uuid, hit against miss',
      data: {
        cells: CELLS,
        rows,
        countedRequestsPerVariant: countedOps,
        cacheLoadsWhileTimed: loads,
        missesWhileTimed: uuids.missesUsed,
        targets: { hitRoundTrips: 1, missRoundTrips: 2, met: roundTripsMet && hitsWereHits },
      },
      markdown: [
        `${CELLS} cells, servers seeded with their instance mappings. Round trips counted by TypeORM loggers on the API and cell DataSources over ${countedOps} requests per variant; latency timed on a \`Cells\` without loggers, variants interleaved. A miss asks for a server this process has never looked up (the cell's own mapping stays cached, as in a running service).`,
        '',
        markdownTable(
          [
            'variant',
            'API queries / request',
            'cell queries / request',
            'median µs',
            'p99 µs',
            'ratio to library hit',
          ],
          rows.map((r) => [
            r.name,
            perRequest(r.api),
            perRequest(r.cell),
            r.medianUs,
            r.p99Us,
            r.ratio,
          ]),
        ),
        '',
        `A miss costs **${missCost('library, cache miss', 'library, cache hit').toFixed(0)} µs** more than a hit as a library call and **${missCost('HTTP, cache miss', 'HTTP, cache hit').toFixed(0)} µs** through the app (medians).`,
        `Cache check: ${loads} API lookups ran while timing, for ${uuids.missesUsed} misses${hitsWereHits ? ': every hit was served from the cache' : ': **some hits went to the API database** (entries expired or were evicted)'}.`,
        `Target: a hit is 1 round trip (the cell query), a miss 2 (instance lookup + cell query): **${roundTripsMet && hitsWereHits ? 'met' : 'missed'}**.`,
      ].join('\n'),
    };
  } finally {
    for (const agent of agents) agent.destroy();
    await Promise.all(servers.map((s) => s.close()));
    await world.destroy();
  }
}

/** A per-request count: exact when whole, else two decimals. */
function perRequest(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** Runs each variant `ops` times on a `Cells` whose API and cell DataSources count their queries. */
async function countRoundTrips(
  world: ExampleApp,
  hot: readonly string[],
  fresh: readonly string[],
  ops: number,
): Promise<Record<VariantName, { api: number; cell: number }>> {
  const apiQueries = new QueryCounter();
  const cellQueries = new QueryCounter();
  const cells = await world.open({
    api: { url: world.api.url, logger: apiQueries },
    cellDataSourceOptions: { logger: cellQueries },
  });
  const path = await openPath(cells);
  try {
    await warm(path, hot);
    const uuids = uuidSource(hot, fresh);
    const counts = {} as Record<VariantName, { api: number; cell: number }>;
    for (const name of VARIANTS) {
      const api = apiQueries.count();
      const cell = cellQueries.count();
      for (let i = 0; i < ops; i++)
        await path.lookups[name](isMiss(name) ? uuids.miss() : uuids.hit());
      counts[name] = {
        api: (apiQueries.count() - api) / ops,
        cell: (cellQueries.count() - cell) / ops,
      };
    }
    return counts;
  } finally {
    path.agent.destroy();
    await path.http.close();
  }
}

/** Looks every hot server up once through both paths: cell DataSources open, mappings cached, JIT warm. */
async function warm(path: Path, hot: readonly string[]): Promise<void> {
  for (const uuid of hot) {
    await path.lookups['library, cache hit'](uuid);
    await path.lookups['HTTP, cache hit'](uuid);
  }
}

export const scenario: Scenario = { id: 'mapping-cache', order: 2, run: mappingCache };
