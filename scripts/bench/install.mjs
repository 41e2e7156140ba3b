#!/usr/bin/env node
// Benchmark: installing an image's layers through smd's image code (readImage + extractLayers:
// read, verify every digest and size, gunzip, safe unpack, rename into place) against the floor
// measured in the same run: `sha256sum` of the blobs, then GNU `tar -xzf` of each layer.
// Also the peak RSS of an install in a child process, for a ~50 MB and a ~150 MB image, to show
// that memory does not grow with image size.
//
//   npx tsc -p . && node scripts/bench/install.mjs [--runs N] [--size-mb 50] [--big-mb 150]
//
// Prints one JSON object: {name: "install", figures: [{name, value, unit, baseline?, ratio?, target?}]}.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzip, imageLayout, MT, tarBuffer, writeArchive } from '../images/oci.mjs';
import { layerEntries } from './lib/image.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(HERE, '../../dist/images/index.js');
const TARGET_RATIO = 1.3;

function args() {
  const a = process.argv.slice(2);
  const o = { runs: 7, sizeMb: 50, bigMb: 150 };
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--runs') o.runs = Number(a[++i]);
    else if (a[i] === '--size-mb') o.sizeMb = Number(a[++i]);
    else if (a[i] === '--big-mb') o.bigMb = Number(a[++i]);
  }
  return o;
}

/** Builds an image of ~sizeMb unpacked in 3 gzip layers: archive + the layout's blobs as files. */
function buildImage(dir, sizeMb) {
  const per = Math.floor((sizeMb * 1024 * 1024) / 3);
  const layers = [0, 1, 2].map((li) => ({ data: gzip(tarBuffer(layerEntries(per, li))), mediaType: MT.layerTarGzip }));
  const img = imageLayout({ layers, config: { Entrypoint: ['/bin/true'] } });
  const archive = writeArchive(join(dir, `image-${sizeMb}.tar`), img.files);
  const blobDir = join(dir, `blobs-${sizeMb}`);
  mkdirSync(blobDir, { recursive: true });
  const blobs = img.files.filter((f) => f.path.startsWith('blobs/')).map((f) => {
    const p = join(blobDir, f.path.slice('blobs/sha256/'.length));
    writeFileSync(p, f.data);
    return p;
  });
  const layerBlobs = img.layers.map((l) => join(blobDir, l.digest.slice(7)));
  return { archive, blobs, layerBlobs, layerDigests: img.layers.map((l) => l.digest), archiveBytes: statSync(archive).size, unpackedBytes: per * 3 };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function floorOnce(img, out) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const t0 = process.hrtime.bigint();
  const h = spawnSync('sha256sum', img.blobs, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (h.status !== 0) throw new Error('sha256sum failed');
  img.layerBlobs.forEach((b, i) => {
    const d = join(out, String(i));
    mkdirSync(d);
    const r = spawnSync('tar', ['-xzf', b, '-C', d], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error('tar -xzf failed');
  });
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function oursOnce(mod, img, out) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const t0 = process.hrtime.bigint();
  const image = await mod.readImage(img.archive);
  await mod.extractLayers(image, { wanted: new Set(image.layers.map((l) => l.digest)), destFor: (d) => join(out, d.slice(7)) });
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Peak RSS (MiB) of a fresh Node process that installs the image, and of one that only loads the code. */
function childRss(archive, out, only) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const code = `
    const mod = await import(${JSON.stringify(pathToFileURL(DIST).href)});
    if (${only ? 'false' : 'true'}) {
      const image = await mod.readImage(${JSON.stringify(archive)});
      await mod.extractLayers(image, { wanted: new Set(image.layers.map((l) => l.digest)), destFor: (d) => ${JSON.stringify(out)} + '/' + d.slice(7) });
    }
    // VmHWM: the peak RSS of this process's own memory map (maxRSS would also count the
    // parent's pages duplicated by fork before exec).
    const hwm = /VmHWM:\\s+(\\d+) kB/.exec((await import('node:fs')).readFileSync('/proc/self/status', 'utf8'));
    process.stdout.write(hwm ? hwm[1] : String(process.resourceUsage().maxRSS));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child install failed: ${r.stderr}`);
  return Number(r.stdout) / 1024; // KiB → MiB
}

async function main() {
  const o = args();
  const mod = await import(pathToFileURL(DIST).href).catch((err) => {
    process.stderr.write(`cannot load ${DIST}: build first with \`npx tsc -p .\` (${err.message})\n`);
    process.exit(2);
  });
  const work = mkdtempSync(join(tmpdir(), 'smd-bench-install-'));
  const figures = [];
  try {
    const sizes = [o.sizeMb, o.bigMb];
    const rss = {};
    for (const [k, mb] of sizes.entries()) {
      const img = buildImage(work, mb);
      const runs = k === 0 ? o.runs : Math.max(3, Math.ceil(o.runs / 2));
      const floor = [];
      const ours = [];
      await oursOnce(mod, img, join(work, 'warm')); // warm-up (JIT, page cache)
      floorOnce(img, join(work, 'warm-floor'));
      for (let i = 0; i < runs; i++) {
        // alternate the order so that neither side always runs on a warmer machine
        if (i % 2 === 0) {
          floor.push(floorOnce(img, join(work, 'floor')));
          ours.push(await oursOnce(mod, img, join(work, 'ours')));
        } else {
          ours.push(await oursOnce(mod, img, join(work, 'ours')));
          floor.push(floorOnce(img, join(work, 'floor')));
        }
      }
      // Not timed: both sides produced the same trees.
      img.layerDigests.forEach((d, i) => {
        const r = spawnSync('diff', ['-r', '--no-dereference', join(work, 'ours', d.slice(7)), join(work, 'floor', String(i))], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`extracted trees differ for layer ${i}: ${r.stdout.slice(0, 500)}`);
      });
      const mo = median(ours);
      const mf = median(floor);
      const tag = `${mb}MB`;
      figures.push({ name: `install_${tag}_3_layers`, value: Math.round(mo), unit: 'ms', baseline: Math.round(mf), ratio: Number((mo / mf).toFixed(2)), target: `ratio <= ${TARGET_RATIO}`, met: mo / mf <= TARGET_RATIO });
      figures.push({ name: `install_${tag}_throughput`, value: Number((img.unpackedBytes / 1048576 / (mo / 1000)).toFixed(1)), unit: 'MB/s unpacked' });
      figures.push({ name: `image_${tag}_archive_size`, value: Number((img.archiveBytes / 1048576).toFixed(1)), unit: 'MB' });
      rss[mb] = childRss(img.archive, join(work, 'rss'), false);
      figures.push({ name: `peak_rss_install_${tag}`, value: Math.round(rss[mb]), unit: 'MB' });
      rmSync(join(work, 'ours'), { recursive: true, force: true });
      rmSync(join(work, 'floor'), { recursive: true, force: true });
      rmSync(join(work, 'rss'), { recursive: true, force: true });
      rmSync(img.archive, { force: true });
    }
    const idle = childRss('', join(work, 'rss'), true);
    figures.push({ name: 'peak_rss_node_with_image_code_loaded', value: Math.round(idle), unit: 'MB' });
    figures.push({ name: `peak_rss_growth_${o.bigMb}MB_vs_${o.sizeMb}MB`, value: Number((rss[o.bigMb] / rss[o.sizeMb]).toFixed(2)), unit: 'x', target: '<= 1.2', met: rss[o.bigMb] / rss[o.sizeMb] <= 1.2 });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ name: 'install', runs: o.runs, figures }) + '\n');
}

await main();
