/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: what node_exporter's
 * textfile collector and a Prometheus scrape parse. Pure functions and one small builder.
 *
 * Rules kept here (https://prometheus.io/docs/instrumenting/exposition_formats/):
 * - `# HELP name text` escapes backslash as `\\` and line feed as `\n`;
 * - label values are double-quoted and escape backslash, double quote and line feed;
 * - metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* (not `__`);
 * - values are Go floats: integers as digits, `NaN`, `+Inf`, `-Inf`;
 * - all lines of one family are consecutive, HELP and TYPE before its first sample;
 * - no timestamps (node_exporter's textfile collector refuses them).
 */

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'untyped';

export type Labels = Readonly<Record<string, string>>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** The content type a scrape of this text announces. */
export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A label value inside its double quotes. */
export function escapeLabelValue(v: string): string {
  // Fast path: most values (service ids, method names) need nothing.
  if (!/[\\"\n]/.test(v)) return v;
  return v.replace(/[\\"\n]/g, (c) => (c === '\\' ? '\\\\' : c === '"' ? '\\"' : '\\n'));
}

/** The text of a HELP line. */
export function escapeHelp(v: string): string {
  if (!/[\\\n]/.test(v)) return v;
  return v.replace(/[\\\n]/g, (c) => (c === '\\' ? '\\\\' : '\\n'));
}

/** A sample value as the format spells it. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** `{a="1",b="2"}`, or '' without labels. Label names are checked by the builder. */
export function formatLabels(labels: Labels | undefined): string {
  if (!labels) return '';
  let out = '';
  for (const k in labels) out += `${out ? ',' : ''}${k}="${escapeLabelValue(labels[k]!)}"`;
  return out ? `{${out}}` : '';
}

export function checkMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
}

export function checkLabelName(name: string): void {
  if (!LABEL_NAME.test(name) || name.startsWith('__')) throw new Error(`invalid label name ${JSON.stringify(name)}`);
}

/** One metric family being written: its samples, in order. */
export class Family {
  private readonly lines: string[] = [];
  private readonly checked = new Set<string>();

  constructor(
    readonly name: string,
    readonly type: MetricType,
    readonly help: string,
  ) {
    checkMetricName(name);
  }

  /** Adds a sample; a null or undefined value is left out (unknown is not 0). */
  sample(labels: Labels | undefined, value: number | null | undefined, suffix = ''): this {
    if (value === null || value === undefined) return this;
    this.lines.push(`${this.name}${suffix}${this.labelText(labels, '')} ${formatValue(value)}`);
    return this;
  }

  /**
   * A histogram's samples: cumulative `_bucket{le}` for each upper bound (and +Inf = count),
   * `_sum` and `_count`. `counts[i]` is the number of observations in bucket i alone
   * (bounds.length + 1 entries, the last for above the highest bound).
   */
  histogram(labels: Labels | undefined, bounds: readonly number[], counts: readonly number[], sum: number): this {
    if (this.type !== 'histogram') throw new Error(`${this.name} is not a histogram`);
    const inner = this.labelText(labels, '').slice(1, -1); // the labels without braces, once
    const sep = inner ? ',' : '';
    let cumulative = 0;
    for (let i = 0; i <= bounds.length; i++) {
      cumulative += counts[i] ?? 0;
      const le = i < bounds.length ? formatValue(bounds[i]!) : '+Inf';
      this.lines.push(`${this.name}_bucket{${inner}${sep}le="${le}"} ${cumulative}`);
    }
    const plain = inner ? `{${inner}}` : '';
    this.lines.push(`${this.name}_sum${plain} ${formatValue(sum)}`, `${this.name}_count${plain} ${cumulative}`);
    return this;
  }

  /** `{...}` of the labels (names checked once per family), or ''. */
  private labelText(labels: Labels | undefined, none: string): string {
    if (!labels) return none;
    let out = '';
    for (const k in labels) {
      if (!this.checked.has(k)) {
        checkLabelName(k);
        this.checked.add(k);
      }
      out += `${out ? ',' : ''}${k}="${escapeLabelValue(labels[k]!)}"`;
    }
    return out ? `{${out}}` : none;
  }

  get size(): number {
    return this.lines.length;
  }

  /** HELP, TYPE and the samples; '' for a family without samples. */
  text(): string {
    if (this.lines.length === 0) return '';
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n${this.lines.join('\n')}\n`;
  }
}

/** The whole exposition: families in the order they were declared, each name once. */
export class Exposition {
  private readonly families = new Map<string, Family>();

  family(name: string, type: MetricType, help: string): Family {
    if (this.families.has(name)) throw new Error(`metric family ${name} declared twice`);
    const f = new Family(name, type, help);
    this.families.set(name, f);
    return f;
  }

  text(): string {
    let out = '';
    for (const f of this.families.values()) out += f.text();
    return out;
  }
}
