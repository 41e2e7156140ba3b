/**
 * Benchmark images: an OCI archive of 3 gzip layers whose *compressed* size is about `mb` MiB,
 * each layer 60 % incompressible files and 40 % compressible small text files (the mix of
 * install.mjs). The compression ratio of the mix is measured once on a small layer and the
 * unpacked size scaled from it, so that the blobs, not the unpacked trees, are what `mb` says.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { gzip, imageLayout, MT, tarBuffer, writeArchive } from '../../images/oci.mjs';

/** Deterministic compressible text (log-like lines). */
function textFile(bytes, seed) {
  const lines = [];
  let n = 0;
  let len = 0;
  while (len < bytes) {
    const line = `${seed}:${n} INFO service started worker=${n % 17} path=/var/lib/app/${seed}/${n % 101} status=ok latency_ms=${(n * 7) % 997}\n`;
    lines.push(line);
    len += line.length;
    n++;
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

/** Entries of one layer of about `bytes` unpacked. */
export function layerEntries(bytes, li) {
  const entries = [{ path: `layer${li}/`, type: 'dir', mode: 0o755 }, { path: `layer${li}/bin/`, type: 'dir', mode: 0o755 }, { path: `layer${li}/share/`, type: 'dir', mode: 0o755 }];
  for (let d = 0; d < 20; d++) entries.push({ path: `layer${li}/share/d${d}/`, type: 'dir', mode: 0o755 });
  let rnd = Math.floor(bytes * 0.6);
  for (let i = 0; rnd > 0; i++) {
    const size = Math.min(rnd, (256 + ((i * 389) % 1792)) * 1024);
    entries.push({ path: `layer${li}/bin/blob${i}.bin`, data: randomBytes(size), mode: 0o755 });
    rnd -= size;
  }
  let txt = bytes - Math.floor(bytes * 0.6);
  for (let j = 0; txt > 0; j++) {
    const size = Math.min(txt, (4 + ((j * 37) % 60)) * 1024);
    entries.push({ path: `layer${li}/share/d${j % 20}/file${j}.txt`, data: textFile(size, `${li}-${j}`), mode: 0o644 });
    txt -= size;
  }
  return entries;
}

let ratio = null;
/** compressed / unpacked of the mix, measured once on a 4 MiB layer. */
function compressionRatio() {
  if (ratio === null) {
    const tar = tarBuffer(layerEntries(4 << 20, 9));
    ratio = gzip(tar).length / tar.length;
  }
  return ratio;
}

/**
 * Writes `<dir>/<name>.tar` (an OCI archive) of 3 gzip layers, about `mb` MiB of blobs in all.
 * @returns {{archive: string, layers: {digest: string, size: number}[], manifestBytes: number, configBytes: number,
 *            blobBytes: number, unpackedBytes: number, archiveBytes: number}}
 */
export function buildGzipImage(dir, name, mb) {
  const perLayerUnpacked = Math.round((mb * 1048576) / 3 / compressionRatio());
  const layers = [0, 1, 2].map((li) => ({ data: gzip(tarBuffer(layerEntries(perLayerUnpacked, li))), mediaType: MT.layerTarGzip }));
  const img = imageLayout({ layers, config: { Entrypoint: ['/bin/true'] } });
  const archive = writeArchive(join(dir, `${name}.tar`), img.files);
  const manifestBytes = img.files.find((f) => f.path === `blobs/sha256/${img.manifestDigest.slice(7)}`).data.length;
  const configBytes = img.files.find((f) => f.path === `blobs/sha256/${img.configDigest.slice(7)}`).data.length;
  const layerBytes = img.layers.reduce((n, l) => n + l.size, 0);
  return {
    archive,
    layers: img.layers.map((l) => ({ digest: l.digest, size: l.size })),
    manifestDigest: img.manifestDigest,
    manifestBytes,
    configBytes,
    layerBytes,
    blobBytes: layerBytes + manifestBytes + configBytes,
    unpackedBytes: perLayerUnpacked * 3,
    archiveBytes: statSync(archive).size,
  };
}
