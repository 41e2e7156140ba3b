// `npm run bench`: runs every benchmark in scripts/bench/*.mjs (each prints one JSON object
// {name, figures}), then writes bench-results.json and bench-results.md. Select some with
// `npm run bench -- rpc systemd`.
import { execFileSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = import.meta.dirname;
const wanted = process.argv.slice(2);
const benches = readdirSync(dir)
  .filter((f) => f.endsWith('.mjs') && f !== 'run.mjs')
  .map((f) => f.replace(/\.mjs$/, ''))
  .filter((name) => wanted.length === 0 || wanted.includes(name));

const results = [];
for (const name of benches) {
  process.stderr.write(`bench: ${name}\n`);
  try {
    const out = execFileSync(process.execPath, [join(dir, `${name}.mjs`)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26, timeout: 20 * 60_000 });
    results.push(JSON.parse(out.slice(out.indexOf('{'))));
  } catch (err) {
    results.push({ name, error: String(err.message).split('\n')[0], figures: [] });
  }
}

const machine = { date: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length };
writeFileSync('bench-results.json', JSON.stringify({ machine, results }, null, 2) + '\n');
const fmt = (v) => (v === undefined ? '' : typeof v === 'number' ? String(v) : String(v));
const rows = results.flatMap((r) =>
  r.error ? [`| ${r.name} | **failed: ${r.error}** | | | | | |`] : r.figures.map((f) => `| ${r.name} | ${f.name} | ${fmt(f.value)} ${f.unit} | ${fmt(f.baseline)} | ${fmt(f.ratio)} | ${fmt(f.target)} | ${f.met === undefined ? '' : f.met ? 'yes' : '**no**'} |`),
);
const md = ['| bench | figure | value | baseline (same run) | ratio | target | met |', '|---|---|---|---|---|---|---|', ...rows].join('\n') + '\n';
writeFileSync('bench-results.md', md);
process.stdout.write(md);
