import autocannon from 'autocannon';
import { markdownTable } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { createExampleApp } from '../../spec/support/example-app';
import { startChildServer, type ChildServer, type ServerSpec } from '../support-http';
import { median } from '../support-stats';

const CELLS = 2;
const POOL_SIZE = 5;
const CONNECTIONS = 16;
const TARGET_RATIO = 0.9;
/** No round's routed / unrouted ratio below this share of the median round's (no TTL cliff). */
const TARGET_WORST_ROUND = 0.9;

/** One autocannon run against one app. */
interface Run {
  variant: Variant;
  round: number;
  requests: number;
  seconds: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** CPU time of the app's process per answered request. */
  cpuUsPerRequest: number;
  /** Mapping-cache misses of the routed app during the run: API-database queries on a request's path. */
  mappingLoads: number;
  /** Background refreshes of the routed app's mappings past their TTL during the run. */
  mappingRefreshes: number;
}

const ROUTED = 'routed';
const UNROUTED = 'unrouted';
const UNROUTED_ALS = 'unrouted + AsyncLocalStorage';
const VARIANTS = [ROUTED, UNROUTED, UNROUTED_ALS] as const;
type Variant = (typeof VARIANTS)[number];

/**
 * Loads `GET /servers/:uuid` with CONNECTIONS keep-alive connections for `length` (seconds, or a
 * number of requests), each request asking for the next of `uuids`.
 * @throws Error when any request failed or answered anything but 200.
 */
async function load(
  port: number,
  uuids: readonly string[],
  length: { seconds: number } | { requests: number },
): Promise<autocannon.Result> {
  let next = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    ...('seconds' in length ? { duration: length.seconds } : { amount: length.requests }),
    requests: [
      {
        method: 'GET',
        setupRequest: (request) => ({
          ...request,
          path: `/servers/${uuids[(next = (next + 1) % uuids.length)]!}`,
        }),
      },
    ],
  });
  if (result.errors > 0 || result.non2xx > 0) {
    throw new Error(
      `port ${port}: ${result.errors} errors, ${result.non2xx} non-2xx answers of ${result.requests.total}`,
    );
  }
  return result;
}

/** Throughput, latency and app CPU of one app over its runs. */
function summarise(variant: Variant, runs: readonly Run[]) {
  const mine = runs.filter((r) => r.variant === variant);
  const requests = mine.reduce((a, r) => a + r.requests, 0);
  return {
    variant,
    reqPerSec: requests / mine.reduce((a, r) => a + r.seconds, 0),
    p50Ms: median(mine.map((r) => r.p50Ms)),
    p99Ms: median(mine.map((r) => r.p99Ms)),
    meanMs: mine.reduce((a, r) => a + r.meanMs * r.requests, 0) / requests,
    cpuUsPerRequest: mine.reduce((a, r) => a + r.cpuUsPerRequest * r.requests, 0) / requests,
    mappingLoads: mine.reduce((a, r) => a + r.mappingLoads, 0),
    mappingRefreshes: mine.reduce((a, r) => a + r.mappingRefreshes, 0),
  };
}

/**
 * Scenario 6: the example app's `GET /servers/:uuid` under autocannon (servers spread over the
 * cells, requests rotating over them) against the same route on one plain TypeORM DataSource
 * without routing, and that route again with a bare AsyncLocalStorage context per request (what the
 * context costs the runtime, apart from the library). Each app runs in its own Node process; short
 * runs alternate (order reversed every round), so drift of a shared machine hits the apps alike,
 * and the ratio judged is the median of the rounds' ratios.
 */
async function httpThroughput(quick: boolean): Promise<ScenarioResult> {
  const world = await createExampleApp('bench_http', { cellCount: CELLS });
  const children: ChildServer[] = [];
  try {
    const uuids = await world.seed(quick ? 200 : 2000);
    const first = world.cells[0]!;
    const firstCellUuids = uuids.filter((_, i) => i % CELLS === 0);
    const start = async (spec: ServerSpec) => {
      const child = await startChildServer(spec);
      children.push(child);
      return child;
    };
    // The unrouted apps get as many connections as the routed app has over all its cells.
    const unrouted = (asyncContext: boolean): ServerSpec => ({
      kind: 'unrouted',
      url: first.url,
      poolSize: POOL_SIZE * CELLS,
      cell: { uuid: first.mapping.uuid, name: first.mapping.name },
      asyncContext,
    });
    const apps: Record<Variant, { server: ChildServer; uuids: readonly string[] }> = {
      [ROUTED]: {
        server: await start({ kind: 'routed', apiUrl: world.api.url, poolSize: POOL_SIZE }),
        uuids,
      },
      [UNROUTED]: { server: await start(unrouted(false)), uuids: firstCellUuids },
      [UNROUTED_ALS]: { server: await start(unrouted(true)), uuids: firstCellUuids },
    };
    const rounds = quick ? 2 : 10;
    const seconds = quick ? 1 : 3;
    // Warm-up: JIT, pools filled, every mapping cached (each server asked for at least twice).
    for (const { server, uuids: rotation } of Object.values(apps)) {
      await load(server.port, rotation, {
        requests: Math.max(2 * rotation.length, quick ? 500 : 10_000),
      });
    }
    const runs: Run[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const variant of round % 2 === 1 ? VARIANTS : [...VARIANTS].reverse()) {
        const { server, uuids: rotation } = apps[variant];
        const before = await server.counters();
        const r = await load(server.port, rotation, { seconds });
        const after = await server.counters();
        runs.push({
          variant,
          round,
          requests: r['2xx'],
          seconds: r.duration,
          reqPerSec: r['2xx'] / r.duration,
          p50Ms: r.latency.p50,
          p99Ms: r.latency.p99,
          meanMs: r.latency.mean,
          cpuUsPerRequest: (after.cpuMicros - before.cpuMicros) / r['2xx'],
          mappingLoads: after.mappingLoads - before.mappingLoads,
          mappingRefreshes: after.mappingRefreshes - before.mappingRefreshes,
        });
      }
    }
    const summaries = VARIANTS.map((v) => summarise(v, runs));
    const of = (variant: Variant, round: number) =>
      runs.find((r) => r.variant === variant && r.round === round)!;
    const roundNumbers = Array.from({ length: rounds }, (_, i) => i + 1);
    /** Median over the rounds of `a`'s throughput over `b`'s in the same round. */
    const ratioOf = (a: Variant, b: Variant) =>
      median(roundNumbers.map((n) => of(a, n).reqPerSec / of(b, n).reqPerSec));
    const cpuRatioOf = (a: Variant, b: Variant) =>
      summaries.find((s) => s.variant === a)!.cpuUsPerRequest /
      summaries.find((s) => s.variant === b)!.cpuUsPerRequest;
    const ratio = ratioOf(ROUTED, UNROUTED);
    const ratioToAls = ratioOf(ROUTED, UNROUTED_ALS);
    const alsRatio = ratioOf(UNROUTED_ALS, UNROUTED);
    const cpuRatio = cpuRatioOf(ROUTED, UNROUTED);
    const met = ratio >= TARGET_RATIO;
    const roundRatios = roundNumbers.map((n) => of(ROUTED, n).reqPerSec / of(UNROUTED, n).reqPerSec);
    const worstRound = Math.min(...roundRatios) / ratio;
    const misses = runs.reduce((a, r) => a + r.mappingLoads, 0);
    const refreshes = runs.reduce((a, r) => a + r.mappingRefreshes, 0);
    const noCliff = worstRound >= TARGET_WORST_ROUND && misses === 0;
    return {
      id: 'http',
      title: '6. HTTP: the example app under load, routed against unrouted',
      data: {
        cells: CELLS,
        poolSize: POOL_SIZE,
        connections: CONNECTIONS,
        seconds,
        rounds,
        runs,
        summaries,
        ratio,
        ratioToAls,
        alsRatio,
        cpuRatio,
        cpuRatioToAls: cpuRatioOf(ROUTED, UNROUTED_ALS),
        worstRound,
        mappingMisses: misses,
        mappingRefreshes: refreshes,
        target: { ratio: TARGET_RATIO, met, worstRound: TARGET_WORST_ROUND, misses: 0, noCliff },
      },
      markdown: [
        `autocannon, ${CONNECTIONS} keep-alive connections, ${rounds} rounds of ${seconds} s per app, alternating (order reversed every round). **routed**: the example app (\`createApp(cells)\`: request context, mapping lookup, routed repository; default options) over ${CELLS} cells, pool ${POOL_SIZE} each, ${uuids.length} servers. **unrouted**: the same route and middleware shape minus the context on one plain DataSource of one cell (pool ${POOL_SIZE * CELLS}). **unrouted + AsyncLocalStorage**: that app with each request run in a bare \`AsyncLocalStorage.run\` and nothing else. Each app in its own Node process (${process.version}); latencies are medians over the runs.`,
        '',
        markdownTable(
          ['app', 'req/s', 'latency p50 ms', 'latency p99 ms', 'mean ms', 'app CPU µs / request'],
          summaries.map((s) => [
            s.variant,
            s.reqPerSec,
            s.p50Ms,
            s.p99Ms,
            s.meanMs,
            s.cpuUsPerRequest,
          ]),
        ),
        '',
        markdownTable(
          [
            'round',
            ...VARIANTS.map((v) => `${v} req/s`),
            'routed / unrouted',
            'routed mapping misses',
            'routed background refreshes',
          ],
          roundNumbers.map((n) => [
            String(n),
            ...VARIANTS.map((v) => of(v, n).reqPerSec),
            of(ROUTED, n).reqPerSec / of(UNROUTED, n).reqPerSec,
            String(of(ROUTED, n).mappingLoads),
            String(of(ROUTED, n).mappingRefreshes),
          ]),
        ),
        '',
        `Routed / unrouted throughput: **${ratio.toFixed(3)}** (median of the rounds; target ≥ ${TARGET_RATIO}): **${met ? 'met' : 'missed'}**. App-process CPU per request, routed / unrouted: ${cpuRatio.toFixed(3)}.`,
        `Where it goes: a bare AsyncLocalStorage context alone gives ${alsRatio.toFixed(3)} of the unrouted throughput (CPU per request ${cpuRatioOf(UNROUTED_ALS, UNROUTED).toFixed(3)}×); routed / unrouted + AsyncLocalStorage is ${ratioToAls.toFixed(3)} (CPU ${cpuRatioOf(ROUTED, UNROUTED_ALS).toFixed(3)}×), the share of the library itself (context object, mapping lookup, routing).`,
        `No TTL cliff: mapping misses on the request path after the warm-up **${misses}** (target 0); worst round's routed / unrouted ratio **${worstRound.toFixed(3)}×** the median round's (target ≥ ${TARGET_WORST_ROUND}): **${noCliff ? 'met' : 'missed'}**. Mappings past their TTL (\`mappingCache.ttlMs\`, 60 s by default, each drawn between 30 and 60 s) are served while they are refreshed in the background (${refreshes} refreshed, up to 100 per query, two queries at a time).`,
      ].join('\n'),
    };
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await world.destroy();
  }
}

export const scenario: Scenario = { id: 'http', order: 6, run: httpThroughput };
