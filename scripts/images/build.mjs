#!/usr/bin/env node
// Builds small example OCI image archives from Debian's busybox-static, offline and
// deterministically (same input → same digests).
//
//   node scripts/images/build.mjs OUTDIR [--version N]... [--gzip] [--busybox PATH] [--os-version V]
//
// Writes OUTDIR/<name>-v<N>.tar for hello-http, writer and failing (versions 1 and 2 unless
// --version is given), and OUTDIR/layer-base.tar, a layer package holding the shared base layer.
// All app images share the same base layer (busybox + applet links). Prints a JSON summary.
import { mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzip, imageLayout, MT, sha256, tarBuffer, writeArchive } from './oci.mjs';

export const APPLETS = [
  'sh', 'ash', 'ls', 'cat', 'echo', 'sleep', 'httpd', 'wget', 'dd', 'mkdir', 'env', 'id', 'date', 'rm', 'mv', 'cp',
  'ps', 'kill', 'true', 'false', 'test', '[', 'printf', 'head', 'tail', 'grep', 'sed', 'awk', 'wc', 'sync', 'touch',
  'uname', 'hostname', 'nc', 'df', 'du', 'chmod', 'ln', 'pwd', 'basename', 'dirname', 'tee', 'seq', 'stat', 'find',
];
/** Applets written as hard links to /bin/busybox (the rest are relative symlinks). */
const HARDLINKED = new Set(['ash', 'sleep']);

export function baseLayerTar(busyboxPath = '/bin/busybox') {
  const busybox = readFileSync(busyboxPath);
  const entries = [
    { path: 'bin/', type: 'dir', mode: 0o755 },
    { path: 'bin/busybox', data: busybox, mode: 0o755 },
    ...APPLETS.map((a) =>
      HARDLINKED.has(a) ? { path: `bin/${a}`, type: 'hardlink', linkpath: 'bin/busybox', mode: 0o755 } : { path: `bin/${a}`, type: 'symlink', linkpath: 'busybox', mode: 0o777 },
    ),
    { path: 'usr/', type: 'dir', mode: 0o755 },
    { path: 'usr/bin/', type: 'dir', mode: 0o755 },
    { path: 'usr/bin/env', type: 'symlink', linkpath: '/bin/busybox', mode: 0o777 },
    { path: 'etc/', type: 'dir', mode: 0o755 },
    { path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n', mode: 0o644 },
    { path: 'etc/group', data: 'root:x:0:\nnogroup:x:65534:\n', mode: 0o644 },
    { path: 'tmp/', type: 'dir', mode: 0o1777 },
    { path: 'data/', type: 'dir', mode: 0o755 },
    { path: 'proc/', type: 'dir', mode: 0o755 },
    { path: 'dev/', type: 'dir', mode: 0o755 },
    { path: 'root/', type: 'dir', mode: 0o700 },
  ];
  return tarBuffer(entries);
}

const APPS = {
  'hello-http': (v) => ({
    entries: [
      { path: 'www/', type: 'dir', mode: 0o755 },
      { path: 'www/index.html', data: `<!doctype html><title>hello</title><h1>hello from smd, version ${v}</h1>\n`, mode: 0o644 },
    ],
    config: { Entrypoint: ['/bin/busybox', 'httpd'], Cmd: ['-f', '-p', '8080', '-h', '/www'], Env: ['PATH=/bin:/usr/bin', `HELLO_VERSION=${v}`], WorkingDir: '/www', ExposedPorts: { '8080/tcp': {} } },
  }),
  writer: (v) => ({
    entries: [
      { path: 'app/', type: 'dir', mode: 0o755 },
      {
        path: 'app/writer.sh',
        mode: 0o755,
        data: [
          '#!/bin/sh',
          `# writer v${v}: appends a line to its storage every second, keeps its count as state, and logs it`,
          'dir="${DATA_DIR:-/data}"',
          'mkdir -p "$dir"',
          'n=0',
          'while true; do',
          '  n=$((n + 1))',
          `  echo "v${v} tick $n $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$dir/ticks.log"`,
          '  [ -n "$SMD_STATE_FILE" ] && echo "ticks=$n" > "$SMD_STATE_FILE"',
          `  echo "writer v${v}: tick $n"`,
          '  sleep 1',
          'done',
          '',
        ].join('\n'),
      },
    ],
    config: { Entrypoint: ['/bin/sh', '/app/writer.sh'], Cmd: [], Env: ['PATH=/bin:/usr/bin'], WorkingDir: '/data' },
  }),
  failing: (v) => ({
    entries: [
      { path: 'app/', type: 'dir', mode: 0o755 },
      { path: 'app/fail.sh', mode: 0o755, data: `#!/bin/sh\necho "<3>failing v${v}: fatal error: configuration missing" >&2\nexit 3\n` },
    ],
    config: { Entrypoint: ['/bin/sh', '/app/fail.sh'], Cmd: [], Env: ['PATH=/bin:/usr/bin'], WorkingDir: '/' },
  }),
};

/** Builds every example into outDir; returns the summary. */
export function buildExamples(outDir, { versions = [1, 2], gzipArchive = false, busybox = '/bin/busybox', osVersion } = {}) {
  mkdirSync(outDir, { recursive: true });
  const platform = { os: 'linux', architecture: 'amd64', ...(osVersion ? { 'os.version': osVersion } : {}) };
  const base = gzip(baseLayerTar(busybox));
  const baseDigest = sha256(base);
  const ext = gzipArchive ? '.tar.gz' : '.tar';
  const images = [];
  for (const [name, make] of Object.entries(APPS)) {
    for (const v of versions) {
      const app = make(v);
      const layer = gzip(tarBuffer(app.entries));
      const ref = `${name}:v${v}`;
      const img = imageLayout({
        layers: [{ data: base, mediaType: MT.layerTarGzip }, { data: layer, mediaType: MT.layerTarGzip }],
        config: app.config,
        annotations: { 'io.smd.id': name, 'io.smd.version': String(v), 'org.opencontainers.image.title': name },
        refName: ref,
        platform,
      });
      const path = join(outDir, `${name}-v${v}${ext}`);
      writeArchive(path, img.files, { gzip: gzipArchive });
      images.push({ name, version: v, ref, path, size: statSync(path).size, manifestDigest: img.manifestDigest, layers: img.layers.map((l) => l.digest) });
    }
  }
  const pkg = imageLayout({
    layers: [{ data: base, mediaType: MT.layerTarGzip }],
    config: {},
    annotations: { 'io.smd.layer.id': 'busybox-base' },
    refName: 'layer-base',
    platform,
  });
  const pkgPath = join(outDir, `layer-base${ext}`);
  writeArchive(pkgPath, pkg.files, { gzip: gzipArchive });
  images.push({ name: 'layer-base', version: null, ref: 'layer-base', path: pkgPath, size: statSync(pkgPath).size, manifestDigest: pkg.manifestDigest, layers: [baseDigest] });
  return { outDir, baseLayer: baseDigest, images };
}

function main(argv) {
  const args = argv.slice(2);
  let outDir = null;
  const versions = [];
  let gzipArchive = false;
  let busybox = '/bin/busybox';
  let osVersion;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--version') versions.push(Number(args[++i]));
    else if (a === '--gzip') gzipArchive = true;
    else if (a === '--busybox') busybox = args[++i];
    else if (a === '--os-version') osVersion = args[++i];
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: node scripts/images/build.mjs OUTDIR [--version N]... [--gzip] [--busybox PATH] [--os-version V]\n');
      return 0;
    } else if (!a.startsWith('-') && outDir === null) outDir = a;
    else {
      process.stderr.write(`build.mjs: unknown argument ${a}\n`);
      return 2;
    }
  }
  if (!outDir) {
    process.stderr.write('usage: node scripts/images/build.mjs OUTDIR [--version N]... [--gzip]\n');
    return 2;
  }
  if (versions.some((v) => !Number.isInteger(v) || v < 0)) {
    process.stderr.write('build.mjs: --version takes a non-negative integer\n');
    return 2;
  }
  try {
    statSync(busybox);
  } catch {
    process.stderr.write(`build.mjs: ${busybox} not found: install the Debian package busybox-static (apt-get install busybox-static)\n`);
    return 1;
  }
  const summary = buildExamples(resolve(outDir), { versions: versions.length ? versions : [1, 2], gzipArchive, busybox, osVersion });
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = main(process.argv);
}
