#!/usr/bin/env node
// Benchmark (issue #14): pulling an image from an OCI registry through smd's own code
// (ImageSources.resolve → ensureSpace → fetch: downloads verified by sha256 as they arrive,
// fsynced, renamed; then extractLayers: verify, gunzip, safe unpack, rename into place) against
// the floor measured in the same run: `skopeo copy docker://… oci:DIR` then GNU `tar -xzf` of
// each layer blob. The registry is Debian's docker-registry on 127.0.0.1 (this network
// namespace, loopback only), started and stopped by the bench.
//
//   npm run build && node scripts/bench/pull.mjs [--runs 7] [--size-mb 50] [--big-mb 150] [--profile] [--cut fin|rst]
//
// Figures:
//  - pull_<N>MB_3_layers: median ms of a cold pull (a fresh child process, a fresh dataDir and
//    output directory each trial; smd and floor interleaved, the order alternating), timed from
//    the first request to the last layer in place — smd inside its child (without Node's start
//    and module loading, the HTTP client's included), the floor inside its mount namespace
//    (without unshare and the tmpfs mount that keep skopeo's cache private). The whole-process
//    times are reported beside it.
//  - resume_after_cut_50pct: a TCP proxy of the bench between smd and the registry resets the
//    connection of the biggest layer once half of it has passed; every byte the server sent
//    through the proxy, over the image's bytes (layers + config + manifest). A Range request
//    for that layer must have followed. The cut ends the connection with a FIN after what the
//    proxy handed over (`--cut rst` resets it instead: then the proxy's own socket send buffer,
//    up to MBs on loopback, is dropped unsent, and the proxy's count overstates what reached smd).
//  - peak RSS (VmHWM of the child, MB) of a pull of the N MB and of the big image, and their ratio.
// `--profile` adds variants, round-robin with the floor: parallelFetches 1 (the image has 3
// layers, so more than 3 changes nothing), download only, FileHandle write/sync timed, fsync
// skipped, and fetch + extract of one layer at a time overlapped (what a pipelined installer
// would take).
//
// Prints one JSON object: {name: "pull", figures: [{name, value, unit, baseline?, ratio?, target?, met?}]}.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startCutProxy } from './lib/cut-proxy.mjs';
import { buildGzipImage } from './lib/image.mjs';
import { inPrivateCache, killRunning, run, skopeo, startRegistry } from './lib/registry.mjs';
import { figure, median, round } from './lib/stats.mjs';

const ROOT = resolve(import.meta.dirname, '../..');
const DIST = (p) => pathToFileURL(join(ROOT, 'dist', p)).href;
const SELF = import.meta.filename;
const TARGET_RATIO = 1.2;
const TARGET_RESUME = 1.05;
const TARGET_RSS = 1.2;
const MB = 1048576;

function args() {
  const a = process.argv.slice(2);
  const o = { runs: 7, sizeMb: 50, bigMb: 150, profile: false, cut: 'fin' };
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--runs') o.runs = Number(a[++i]);
    else if (a[i] === '--size-mb') o.sizeMb = Number(a[++i]);
    else if (a[i] === '--big-mb') o.bigMb = Number(a[++i]);
    else if (a[i] === '--profile') o.profile = true;
    else if (a[i] === '--cut') o.cut = a[++i];
  }
  return o;
}

const log = (msg) => process.stderr.write(`pull: ${msg}\n`);

// ---------------------------------------------------------------------------------------------
// The child: one cold pull through smd's code. Prints {ms, resolveMs, fetchMs, extractMs, hwmKb, maxRssKb}.

/**
 * Profiling only (`--profile`): times FileHandle.write and .sync (the download loop's per-chunk
 * write and its fsync at the end of each blob); `skipSync` makes sync a no-op to see its cost.
 */
async function instrument(skipSync) {
  const { open } = await import('node:fs/promises');
  const fh = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(fh);
  await fh.close();
  const t = { writes: 0, writeMs: 0, writeBytes: 0, syncs: 0, syncMs: 0 };
  const write = proto.write;
  const sync = proto.sync;
  proto.write = async function (buf, ...rest) {
    const t0 = performance.now();
    try {
      return await write.call(this, buf, ...rest);
    } finally {
      t.writes++;
      t.writeBytes += typeof buf === 'string' ? buf.length : buf.byteLength;
      t.writeMs += performance.now() - t0;
    }
  };
  proto.sync = async function () {
    const t0 = performance.now();
    try {
      return skipSync ? undefined : await sync.call(this);
    } finally {
      t.syncs++;
      t.syncMs += performance.now() - t0;
    }
  };
  return t;
}

async function child(spec) {
  const io = spec.instrument ? await instrument(!!spec.skipSync) : null;
  // Module loading is outside the timed pull, the HTTP client included: the daemon loads undici
  // on its first download (~125 ms from node_modules, ~77 ms as its bundled chunk, measured), once
  // per process, and a long-running device pulls with it loaded.
  const [{ ImageSources }, { extractLayers, DEFAULT_IMAGE_LIMITS }, { silentLogger }] = await Promise.all([import(DIST('images/sources.js')), import(DIST('images/index.js')), import(DIST('log.js')), import('undici')]);
  const t0 = performance.now();
  const sources = new ImageSources({
    dataDir: spec.dataDir,
    limits: { ...DEFAULT_IMAGE_LIMITS },
    reserveBytes: 0,
    hasLayer: () => false,
    logger: silentLogger,
    downloads: { stallTimeoutMs: 30_000, parallelFetches: spec.parallelFetches ?? 3, retries: 8 },
    registries: { [spec.host]: { insecure: true } },
  });
  const r = await sources.resolve({ image: `docker://${spec.host}/${spec.repo}` });
  await sources.ensureSpace([r]);
  const t1 = performance.now();
  const destFor = (d) => join(spec.out, d.slice(7));
  let t2;
  if (spec.pipelined) {
    // Profiling only: what an installer that unpacks each layer as soon as its blob is in
    // would take (smd's own fetch and extractLayers, one layer at a time, overlapped).
    const pending = [];
    for (const l of r.info.layers) {
      const one = await sources.fetch({ ...r, info: { ...r.info, layers: [l] } });
      pending.push(extractLayers(one, { wanted: new Set([l.digest]), destFor }));
    }
    t2 = performance.now();
    await Promise.all(pending);
  } else {
    const info = await sources.fetch(r);
    t2 = performance.now();
    if (!spec.downloadOnly) await extractLayers(info, { wanted: new Set(info.layers.map((l) => l.digest)), destFor });
  }
  const t3 = performance.now();
  await sources.close();
  // VmHWM: the peak RSS of this process's own memory (maxRSS may also count the parent's pages
  // that fork duplicated before exec); both are reported.
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  process.stdout.write(JSON.stringify({ ms: t3 - t0, resolveMs: t1 - t0, fetchMs: t2 - t1, extractMs: t3 - t2, ...(io ? { io } : {}), hwmKb: hwm ? Number(hwm[1]) : null, maxRssKb: process.resourceUsage().maxRSS }) + '\n');
}

// ---------------------------------------------------------------------------------------------
// The parent.

/** One cold smd pull in a fresh child process. */
async function smdOnce(work, tag, spec) {
  const dataDir = join(work, `smd-${tag}-data`);
  const out = join(work, `smd-${tag}-out`);
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(out, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  mkdirSync(out, { recursive: true });
  const r = await run(process.execPath, [SELF, '--child', JSON.stringify({ ...spec, dataDir, out })], { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`smd pull (${tag}) exited ${r.code}: ${r.stderr.trim().slice(-3000)}`);
  rmSync(dataDir, { recursive: true, force: true });
  return { ...JSON.parse(r.stdout.trim().split('\n').pop()), wallMs: r.ms, out };
}

/** The floor: skopeo copy to an OCI layout, then tar -xzf of each layer blob, timed inside the namespace. */
const FLOOR_SCRIPT = `
ref=$1; out=$2; shift 2
t0=$(date +%s%N)
skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$ref" "oci:$out/oci" >/dev/null || exit 91
t1=$(date +%s%N)
i=0
for hex in "$@"; do
  mkdir -p "$out/tree/$i" && tar -xzf "$out/oci/blobs/sha256/$hex" -C "$out/tree/$i" || exit 92
  i=$((i+1))
done
t2=$(date +%s%N)
echo "$t0 $t1 $t2"
`;

async function floorOnce(work, tag, ref, img) {
  const out = join(work, `floor-${tag}`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const [cmd, a] = inPrivateCache(FLOOR_SCRIPT, [ref, out, ...img.layers.map((l) => l.digest.slice(7))]);
  const r = await run(cmd, a, { timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`floor (${tag}) exited ${r.code}: ${r.stderr.trim().slice(-3000)}`);
  const [t0, t1, t2] = r.stdout.trim().split(/\s+/).map(Number);
  return { ms: (t2 - t0) / 1e6, skopeoMs: (t1 - t0) / 1e6, tarMs: (t2 - t1) / 1e6, wallMs: r.ms, out };
}

async function push(reg, img, repo) {
  const r = await skopeo(['copy', '--quiet', '--dest-tls-verify=false', `oci-archive:${img.archive}`, `docker://${reg.host}/${repo}`], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`skopeo push of ${repo} exited ${r.code}: ${r.stderr.trim()}`);
}

async function sameTrees(smdOut, floorOut, img) {
  for (const [i, l] of img.layers.entries()) {
    const r = await run('diff', ['-r', '--no-dereference', join(smdOut, l.digest.slice(7)), join(floorOut, 'tree', String(i))]);
    if (r.code !== 0) throw new Error(`smd and the floor extracted different trees for layer ${i}: ${r.stdout.slice(0, 500)}${r.stderr.slice(0, 500)}`);
  }
}

const mbOf = (bytes) => round(bytes / MB, 1);
const ms = (v) => Math.round(v);

async function main() {
  const o = args();
  try {
    await import(DIST('images/sources.js'));
  } catch (err) {
    process.stderr.write(`cannot load dist/images/sources.js: build first with \`npm run build\` (${err.message})\n`);
    process.exit(2);
  }
  const work = mkdtempSync(join(tmpdir(), 'smd-bench-pull-'));
  let reg = null;
  let proxy = null;
  const cleanup = async () => {
    killRunning();
    await proxy?.close().catch(() => {});
    await reg?.stop().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => void cleanup().finally(() => process.exit(130)));
  const figures = [];
  const started = performance.now();
  try {
    log(`building a ~${o.sizeMb} MB and a ~${o.bigMb} MB image (3 gzip layers each)`);
    const img = buildGzipImage(work, 'small', o.sizeMb);
    const big = buildGzipImage(work, 'big', o.bigMb);
    reg = await startRegistry(join(work, 'registry'));
    log(`registry on ${reg.host}; pushing`);
    await push(reg, img, 'bench/small:v1');
    await push(reg, big, 'bench/big:v1');
    rmSync(img.archive);
    rmSync(big.archive);
    const small = { host: reg.host, repo: 'bench/small:v1' };
    const ref = `${reg.host}/bench/small:v1`;

    // 1. smd against the floor, interleaved, after one warm-up of each (page cache, registry).
    log(`${o.runs} trials each, interleaved`);
    const w1 = await smdOnce(work, 'warm', small);
    const w2 = await floorOnce(work, 'warm', ref, img);
    await sameTrees(w1.out, w2.out, img); // not timed: both sides produced the same trees
    rmSync(w1.out, { recursive: true, force: true });
    rmSync(w2.out, { recursive: true, force: true });
    const ours = [];
    const floor = [];
    for (let i = 0; i < o.runs; i++) {
      const pair = i % 2 === 0 ? [() => floorOnce(work, 't', ref, img), () => smdOnce(work, 't', small)] : [() => smdOnce(work, 't', small), () => floorOnce(work, 't', ref, img)];
      for (const f of pair) {
        const r = await f();
        ('skopeoMs' in r ? floor : ours).push(r);
        rmSync(r.out, { recursive: true, force: true });
      }
    }
    const mo = median(ours.map((r) => r.ms));
    const mf = median(floor.map((r) => r.ms));
    const tag = `${o.sizeMb}MB`;
    figures.push(figure(`pull_${tag}_3_layers`, ms(mo), 'ms', { baseline: ms(mf), target: `ratio <= ${TARGET_RATIO}` }));
    figures.push(figure(`pull_${tag}_3_layers_whole_process`, ms(median(ours.map((r) => r.wallMs))), 'ms', { baseline: ms(median(floor.map((r) => r.wallMs))) }));
    figures.push(figure(`pull_${tag}_smd_download_phase`, ms(median(ours.map((r) => r.resolveMs + r.fetchMs))), 'ms', { baseline: ms(median(floor.map((r) => r.skopeoMs))) }));
    figures.push(figure(`pull_${tag}_smd_extract_phase`, ms(median(ours.map((r) => r.extractMs))), 'ms', { baseline: ms(median(floor.map((r) => r.tarMs))) }));
    figures.push(figure(`pull_${tag}_throughput`, img.layerBytes / MB / (mo / 1000), 'MB/s of blobs'));
    figures.push(figure(`image_${tag}_blobs`, mbOf(img.blobBytes), 'MB', { unpacked: mbOf(img.unpackedBytes) }));
    log(`smd ${ours.map((r) => ms(r.ms)).join(' ')} ms; floor ${floor.map((r) => ms(r.ms)).join(' ')} ms`);

    if (o.profile) {
      // Variants round-robin with plain smd and the floor, so that each median saw the same machine.
      const variants = [
        ['floor', null],
        ['smd_as_benched', small],
        ['parallelFetches_1', { ...small, parallelFetches: 1 }],
        ['download_only', { ...small, downloadOnly: true }],
        ['instrumented', { ...small, instrument: true }],
        ['no_fsync', { ...small, instrument: true, skipSync: true }],
        ['pipelined_fetch_then_extract_per_layer', { ...small, pipelined: true }],
      ];
      const res = new Map(variants.map(([n]) => [n, []]));
      for (let i = 0; i < o.runs; i++) {
        for (const [name, spec] of variants) {
          const r = spec ? await smdOnce(work, 'p', spec) : await floorOnce(work, 'p', ref, img);
          res.get(name).push(r);
          rmSync(r.out, { recursive: true, force: true });
        }
      }
      const base = median(res.get('floor').map((r) => r.ms));
      for (const [name] of variants) {
        const rs = res.get(name);
        const m = (k) => ms(median(rs.map((r) => r[k])));
        const io = rs[0].io ? Object.fromEntries(Object.keys(rs[0].io).map((k) => [k, ms(median(rs.map((r) => r.io[k])))])) : undefined;
        figures.push(figure(`profile_${tag}_${name}`, m('ms'), 'ms', { baseline: ms(base), ...(name === 'floor' ? { skopeoMs: m('skopeoMs'), tarMs: m('tarMs') } : { resolveMs: m('resolveMs'), fetchMs: m('fetchMs'), extractMs: m('extractMs') }), ...(io ? { io } : {}) }));
      }
    }

    // 2. A cut at 50 % of the biggest layer, then the resume.
    const biggest = img.layers.reduce((a, b) => (b.size > a.size ? b : a));
    proxy = await startCutProxy({ host: '127.0.0.1', port: reg.port }, null);
    const clean = await smdOnce(work, 'clean', { host: proxy.host, repo: small.repo });
    rmSync(clean.out, { recursive: true, force: true });
    const cleanBytes = proxy.stats.serverToClient;
    await proxy.close();
    proxy = await startCutProxy({ host: '127.0.0.1', port: reg.port }, { pathEndsWith: `/blobs/${biggest.digest}`, afterBytes: Math.floor(biggest.size / 2), how: o.cut });
    const resumed = await smdOnce(work, 'cut', { host: proxy.host, repo: small.repo });
    rmSync(resumed.out, { recursive: true, force: true });
    const st = proxy.stats;
    await proxy.close();
    proxy = null;
    const ranges = st.requests.filter((q) => q.path.endsWith(`/blobs/${biggest.digest}`) && q.range);
    const rangeStart = ranges.length ? Number(/bytes=(\d+)-/.exec(ranges[0].range)?.[1]) : null;
    figures.push(figure('resume_after_cut_50pct_bytes_fetched', st.serverToClient / img.blobBytes, 'x image bytes', { target: `<= ${TARGET_RESUME}`, bytes: st.serverToClient, imageBytes: img.blobBytes, cleanPullBytes: cleanBytes }));
    figures.push({
      name: 'resume_after_cut_50pct_range_request',
      value: ranges.length ? ranges.map((q) => q.range).join(', ') : 'none',
      unit: 'Range',
      target: 'a Range request past the cut',
      met: st.cutAt !== null && rangeStart !== null && rangeStart > 0 && rangeStart <= st.cutAt.responseBytes,
      cutAfterResponseBytes: st.cutAt?.responseBytes ?? null,
      layerBytes: biggest.size,
      connections: st.connections,
    });
    figures.push(figure('resume_after_cut_50pct_pull', ms(resumed.ms), 'ms', { cleanPullMs: ms(clean.ms) }));

    // 3. Peak RSS: the small image (from the trials above) against the big one.
    const bigRuns = [];
    for (let i = 0; i < 3; i++) {
      const r = await smdOnce(work, 'big', { host: reg.host, repo: 'bench/big:v1' });
      bigRuns.push(r);
      rmSync(r.out, { recursive: true, force: true });
    }
    const rssSmall = median(ours.map((r) => r.hwmKb)) / 1024;
    const rssBig = median(bigRuns.map((r) => r.hwmKb)) / 1024;
    figures.push(figure(`peak_rss_pull_${tag}`, rssSmall, 'MB', { maxRSS: round(median(ours.map((r) => r.maxRssKb)) / 1024, 1) }));
    figures.push(figure(`peak_rss_pull_${o.bigMb}MB`, rssBig, 'MB', { maxRSS: round(median(bigRuns.map((r) => r.maxRssKb)) / 1024, 1) }));
    figures.push(figure(`peak_rss_growth_${o.bigMb}MB_vs_${tag}`, rssBig / rssSmall, 'x', { target: `<= ${TARGET_RSS}` }));
    figures.push(figure(`pull_${o.bigMb}MB_3_layers`, ms(median(bigRuns.map((r) => r.ms))), 'ms', { blobsMB: mbOf(big.blobBytes) }));
  } finally {
    await cleanup();
  }
  log(`done in ${Math.round((performance.now() - started) / 1000)} s`);
  process.stdout.write(JSON.stringify({ name: 'pull', runs: o.runs, figures }) + '\n');
}

if (process.argv[2] === '--child') await child(JSON.parse(process.argv[3]));
else await main();
