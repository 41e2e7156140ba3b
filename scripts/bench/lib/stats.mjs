/** Small helpers shared by the benchmarks: percentiles and the figure format of the report. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function median(values) {
  return percentile([...values].sort((a, b) => a - b), 50);
}

export const round = (v, digits = 3) => Number(v.toFixed(digits));

/** One figure: `ratio` is value/baseline; `target` says what passes, e.g. ">= 0.5" or "< 2". */
export function figure(name, value, unit, extra = {}) {
  const f = { name, value: round(value), unit, ...extra };
  if (extra.baseline !== undefined) f.ratio = round(value / extra.baseline);
  if (extra.target !== undefined) f.met = meets(f, extra.target);
  return f;
}

function meets(f, target) {
  const m = /^(ratio\s*)?(<=|>=|<|>)\s*([\d.]+)$/.exec(target);
  if (!m) return null;
  const v = m[1] ? f.ratio : f.value;
  const t = Number(m[3]);
  return { '<=': v <= t, '>=': v >= t, '<': v < t, '>': v > t }[m[2]];
}
