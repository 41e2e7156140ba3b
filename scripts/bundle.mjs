// Bundles the tsc output into the two programs that ship: dist/bin/smd.js and dist/bin/smctl.js.
// Why: Node 20 has no module compile cache, and resolving, reading and compiling the ~350 files
// of smd and its dependencies one by one cost ~120 ms of every start (npm run bench -- rpc).
// Native addons (better-sqlite3, unix-dgram) stay in node_modules; the image reader stays a
// separate chunk, loaded on first use as before.
import { build } from 'esbuild';
import { chmodSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const outdir = join(root, 'dist/bin');

// dbus-next (pinned at 0.10.2) requires xml2js, with xmlbuilder and sax ~220 KB of the daemon's
// bundle, only to introspect proxy objects and to answer Introspect for exported ones. smd does
// neither (src/systemd/dbus.ts uses the low-level API), but every MessageBus constructs a Builder.
// In its place: a Builder whose answer to a peer's Introspect is an empty node, and a Parser that
// refuses. Compiling and evaluating xml2js cost ~11 ms of every start (npm run bench -- rpc).
const noXml2js = {
  name: 'no-xml2js',
  setup(b) {
    b.onResolve({ filter: /^xml2js$/ }, () => ({ path: 'xml2js', namespace: 'smd-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'smd-stub' }, () => ({
      loader: 'js',
      contents: [
        'class Builder { buildObject() { return "<node/>"; } }',
        'class Parser { parseString(xml, cb) { cb(new Error("D-Bus introspection is not part of smd")); } }',
        'module.exports = { Builder, Parser };',
      ].join('\n'),
    }));
  },
};

// Packages only some requests need, kept out of what the daemon loads before READY=1 (each was
// measured in start to READY, npm run bench -- rpc): a static import of one of them fails the build.
const NOT_AT_START = ['tar', 'undici', 'mqtt'];

rmSync(outdir, { recursive: true, force: true }); // no stale chunks from an earlier build
const { metafile } = await build({
  metafile: true,
  plugins: [noXml2js],
  entryPoints: { smd: join(root, 'dist/daemon/main.js'), smctl: join(root, 'dist/cli/main.js') },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  // Native addons load their .node files relative to their own package.
  // `x11` is an optional transport dbus-next requires inside a try; smd never uses it.
  external: ['better-sqlite3', 'unix-dgram', 'x11'],
  // CommonJS dependencies call require(); an ES module has none unless we make one.
  banner: { js: "import { createRequire as smdCreateRequire } from 'node:module'; const require = smdCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
for (const bin of ['smd.js', 'smctl.js']) chmodSync(join(outdir, bin), 0o755);

/** The daemon's output files loaded at start: its entry and the chunks it imports statically. */
function startFiles() {
  const entry = Object.keys(metafile.outputs).find((f) => metafile.outputs[f].entryPoint?.endsWith('dist/daemon/main.js'));
  const seen = new Set();
  for (const todo = [entry]; todo.length; ) {
    const f = todo.pop();
    if (seen.has(f)) continue;
    seen.add(f);
    for (const i of metafile.outputs[f].imports) if (i.kind === 'import-statement' && !i.external) todo.push(i.path);
  }
  return seen;
}
for (const f of startFiles()) {
  const late = Object.keys(metafile.outputs[f].inputs).filter((i) => NOT_AT_START.some((p) => i.includes(`node_modules/${p}/`)));
  if (late.length) throw new Error(`the daemon would load ${late[0]} at start (${f}); import it where it is used, with import()`);
}
