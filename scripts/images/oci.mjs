// Small, dependency-free writer of tar archives and OCI image layouts, deterministic (fixed
// mtimes, owners and order), used by the example image builder, the benchmark and the tests.
// Headers are written by hand so that tests can also produce hostile entries (devices, `..`,
// setuid bits, bad checksums) that a normal tar tool would refuse to write.
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';

export const FIXED_MTIME = 1700000000; // 2023-11-14, so equal input gives equal digests

export const MT = {
  layout: '1.0.0',
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
};

const TYPE_FLAGS = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6', pax: 'x' };

function octal(n, width) {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

/**
 * One 512-byte ustar header. `type` is a name of TYPE_FLAGS or a raw flag character.
 * @param {{path: string, type?: string, mode?: number, uid?: number, gid?: number, size?: number, mtime?: number,
 *          linkpath?: string, devmajor?: number, devminor?: number, uname?: string, gname?: string, badChecksum?: boolean}} h
 */
export function rawHeader(h) {
  const b = Buffer.alloc(512);
  b.write(h.path, 0, 100, 'utf8');
  b.write(octal(h.mode ?? 0o644, 8), 100, 'ascii');
  b.write(octal(h.uid ?? 0, 8), 108, 'ascii');
  b.write(octal(h.gid ?? 0, 8), 116, 'ascii');
  b.write(octal(h.size ?? 0, 12), 124, 'ascii');
  b.write(octal(h.mtime ?? FIXED_MTIME, 12), 136, 'ascii');
  b.write(TYPE_FLAGS[h.type ?? 'file'] ?? h.type, 156, 'ascii');
  b.write(h.linkpath ?? '', 157, 100, 'utf8');
  b.write('ustar\x0000', 257, 'ascii');
  b.write(h.uname ?? 'root', 265, 32, 'utf8');
  b.write(h.gname ?? 'root', 297, 32, 'utf8');
  b.write(octal(h.devmajor ?? 0, 8), 329, 'ascii');
  b.write(octal(h.devminor ?? 0, 8), 337, 'ascii');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  if (h.badChecksum) sum += 1;
  b.write(octal(sum, 7) + ' ', 148, 'ascii');
  return b;
}

function padTo512(n) {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

function paxRecord(key, value) {
  const body = ` ${key}=${value}\n`;
  // the length counts its own digits: iterate until stable
  let total = Buffer.byteLength(body) + 1;
  for (;;) {
    const next = Buffer.byteLength(body) + String(total).length;
    if (next === total) break;
    total = next;
  }
  return `${total}${body}`;
}

/**
 * Tar entry = header(s) + data + padding. Long paths or link paths get a pax header.
 * @param {{path: string, type?: string, data?: Buffer|string, size?: number, [k: string]: unknown}} e
 */
export function tarEntry(e) {
  const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
  const parts = [];
  let path = e.path;
  let linkpath = e.linkpath;
  if (Buffer.byteLength(path) > 100 || (linkpath && Buffer.byteLength(linkpath) > 100)) {
    let body = paxRecord('path', path);
    if (linkpath) body += paxRecord('linkpath', linkpath);
    const pb = Buffer.from(body);
    parts.push(rawHeader({ path: 'PaxHeader', type: 'pax', size: pb.length }), pb, padTo512(pb.length));
    path = path.slice(0, 99);
    if (linkpath) linkpath = linkpath.slice(0, 99);
  }
  parts.push(rawHeader({ ...e, path, linkpath, size: e.size ?? data.length }), data, padTo512(data.length));
  return Buffer.concat(parts);
}

/** A whole tar archive (with its two zero end blocks unless `end: false`). */
export function tarBuffer(entries, { end = true } = {}) {
  return Buffer.concat([...entries.map(tarEntry), end ? Buffer.alloc(1024) : Buffer.alloc(0)]);
}

export function sha256(buf) {
  return 'sha256:' + createHash('sha256').update(buf).digest('hex');
}

export function gzip(buf) {
  return gzipSync(buf, { level: 6 });
}

export function json(obj) {
  return Buffer.from(JSON.stringify(obj));
}

/**
 * Builds the blobs and documents of a one-manifest OCI layout.
 * @param {{layers: {data: Buffer, mediaType?: string}[], config?: object, annotations?: Record<string,string>,
 *          refName?: string, platform?: {os: string, architecture: string, 'os.version'?: string}}} spec
 *   layer `data` is the blob as stored (gzip it first for +gzip media types).
 * @returns {{files: {path: string, data: Buffer}[], manifestDigest: string, configDigest: string,
 *            layers: {digest: string, size: number, mediaType: string}[], index: object, manifest: object}}
 */
/** sha256 of the uncompressed tar; a hostile fixture's broken gzip keeps the blob's own digest. */
function diffIdOf(data) {
  if (data[0] !== 0x1f || data[1] !== 0x8b) return sha256(data);
  try {
    return sha256(gunzipSync(data));
  } catch {
    return sha256(data);
  }
}

export function imageLayout(spec) {
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers = spec.layers.map((l) => ({
    mediaType: l.mediaType ?? (l.data[0] === 0x1f && l.data[1] === 0x8b ? MT.layerTarGzip : MT.layerTar),
    digest: l.digest ?? sha256(l.data),
    size: l.size ?? l.data.length,
  }));
  const configDoc = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform['os.version'] ? { 'os.version': platform['os.version'] } : {}),
    config: spec.config ?? {},
    // diff_ids are of the uncompressed tars (what a Docker archive made from this image is checked against).
    rootfs: { type: 'layers', diff_ids: spec.layers.map((l) => l.diffId ?? diffIdOf(l.data)) },
    created: new Date(FIXED_MTIME * 1000).toISOString(),
  };
  const configBlob = json(configDoc);
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: { mediaType: MT.config, digest: sha256(configBlob), size: configBlob.length },
    layers,
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const manifestBlob = json(manifest);
  const index = {
    schemaVersion: 2,
    mediaType: MT.index,
    manifests: [
      {
        mediaType: MT.manifest,
        digest: sha256(manifestBlob),
        size: manifestBlob.length,
        platform,
        ...(spec.refName ? { annotations: { 'org.opencontainers.image.ref.name': spec.refName } } : {}),
      },
    ],
  };
  const blobFile = (digest, data) => ({ path: `blobs/sha256/${digest.slice(7)}`, data });
  const files = [
    { path: 'oci-layout', data: json({ imageLayoutVersion: MT.layout }) },
    { path: 'index.json', data: json(index) },
    blobFile(sha256(manifestBlob), manifestBlob),
    blobFile(sha256(configBlob), configBlob),
  ];
  const seen = new Set();
  spec.layers.forEach((l, i) => {
    if (seen.has(layers[i].digest)) return;
    seen.add(layers[i].digest);
    files.push(blobFile(layers[i].digest, l.data));
  });
  return { files, manifestDigest: sha256(manifestBlob), configDigest: sha256(configBlob), layers, index, manifest };
}

/** Writes `files` as a tar (optionally gzip) archive at `path`, directories included. */
export function writeArchive(path, files, { gzip: gz = false } = {}) {
  const dirs = [
    { path: 'blobs/', type: 'dir', mode: 0o755 },
    { path: 'blobs/sha256/', type: 'dir', mode: 0o755 },
  ];
  const entries = [...dirs, ...files.map((f) => ({ path: f.path, data: f.data, mode: 0o644 }))];
  if (!gz) {
    const fd = openSync(path, 'w');
    try {
      for (const e of entries) writeSync(fd, tarEntry(e));
      writeSync(fd, Buffer.alloc(1024));
    } finally {
      closeSync(fd);
    }
  } else {
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, gzip(tarBuffer(entries)));
    } finally {
      closeSync(fd);
    }
  }
  return path;
}
