/**
 * Counters and histograms for the lookup path, registered in a prom-client registry and
 * rendered by it at scrape time, but updated with plain arithmetic. prom-client's own
 * inc() and observe() validate and hash the label set on every call, bound children
 * included: measured ~1–4 µs per update, several per lookup, on a path whose whole budget
 * is a few µs. Here a series is bound once per label set; an update is an add.
 */
import type client from "prom-client";

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

interface Rendered {
  name: string;
  help: string;
  type: "counter" | "histogram";
  aggregator: client.Aggregator;
  values: Value[];
}

/** Label names and values → the label object of one series. */
function labelsOf(names: readonly string[], values: readonly string[]): Record<string, string> {
  if (values.length !== names.length)
    throw new Error(`expected ${names.length} label values, got ${values.length}`);
  const labels: Record<string, string> = {};
  names.forEach((name, i) => {
    labels[name] = values[i] as string;
  });
  return labels;
}

abstract class HotMetric<S> {
  protected readonly series = new Map<string, { labels: Record<string, string>; series: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    registry: client.Registry,
  ) {
    // The registry accepts any object with name, help, type and get() (as prom-client's own).
    registry.registerMetric(this as unknown as client.Metric);
  }

  readonly aggregator: client.Aggregator = "sum";

  /** The series of these label values (in labelNames order), made on first use. */
  labels(...values: string[]): S {
    const id = values.join("\u0000");
    let found = this.series.get(id);
    if (!found) {
      found = { labels: labelsOf(this.labelNames, values), series: this.create() };
      this.series.set(id, found);
    }
    return found.series;
  }

  /** Drops the series of these label values (a label whose values keep coming, such as an experiment id). */
  remove(...values: string[]): void {
    this.series.delete(values.join("\u0000"));
  }

  reset(): void {
    this.series.clear();
  }

  protected abstract create(): S;
}

export class HotCounterSeries {
  value = 0;

  inc(by = 1): void {
    this.value += by;
  }
}

export class HotCounter extends HotMetric<HotCounterSeries> {
  readonly type = "counter";

  protected create(): HotCounterSeries {
    return new HotCounterSeries();
  }

  async get(): Promise<Rendered> {
    const values = [...this.series.values()].map(({ labels, series }) => ({
      labels,
      value: series.value,
    }));
    return { name: this.name, help: this.help, type: "counter", aggregator: "sum", values };
  }
}

export class HotHistogramSeries {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count++;
  }
}

export class HotHistogram extends HotMetric<HotHistogramSeries> {
  readonly type = "histogram";

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private readonly bounds: readonly number[],
    registry: client.Registry,
  ) {
    super(name, help, labelNames, registry);
  }

  protected create(): HotHistogramSeries {
    return new HotHistogramSeries(this.bounds);
  }

  /** Cumulative buckets, then _sum and _count, per series (the Prometheus text layout). */
  async get(): Promise<Rendered> {
    const values: Value[] = [];
    for (const { labels, series } of this.series.values()) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i] as number;
        values.push({
          labels: { le: bound, ...labels },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        });
      });
      values.push({
        labels: { le: "+Inf", ...labels },
        value: series.count,
        metricName: `${this.name}_bucket`,
      });
      values.push({ labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: "histogram", aggregator: "sum", values };
  }
}
