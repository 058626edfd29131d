/**
 * Inline SVG charts for the HTML report, drawn in TypeScript so that the page needs no script, no
 * library and no network: a line chart (several series over rounds or training steps) and a
 * histogram (a distribution, with a subset drawn over it).
 *
 * Every mark carries the number it draws, so that a test or a curious reader can check the chart
 * against the database without measuring pixels:
 * - a line-chart point is `<circle class="point" data-series=NAME data-x=X data-value=Y>`;
 * - a histogram bar is `<rect class="bar" data-series=NAME data-bin=I data-lo=A data-hi=B data-value=COUNT>`.
 * `data-x`, `data-value`, `data-lo` and `data-hi` hold `String(number)`, the shortest text that
 * reads back as the same double, so `Number(attr) === recorded` holds exactly.
 *
 * Non-finite values (NaN is how the store returns a NULL metric) get no point; the line breaks there.
 * All text that reaches the markup goes through `escapeHtml`.
 */

/** Colours of series in order (Okabe–Ito: distinguishable with the common colour-vision deficiencies). */
export const SERIES_COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'] as const;

/** Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`, `"`, `'`). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}
const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** A value for a table cell or a tooltip: 3 decimals (as `tfalign status` prints), integers as they are, `—` for NaN. */
export function formatValue(value: number, digits = 3): string {
  if (Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '−∞';
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(digits);
}

/**
 * The smallest "nice" step (1, 2 or 5 times a power of ten) at least `rawStep`: axis ticks and
 * histogram bins land on round numbers.
 */
export function niceStep(rawStep: number): number {
  if (!(rawStep > 0) || !Number.isFinite(rawStep)) throw new Error(`niceStep: step must be a positive finite number, got ${rawStep}`);
  const magnitude = 10 ** Math.floor(Math.log10(rawStep));
  const normalized = rawStep / magnitude;
  const factor = normalized <= 1 ? 1 : normalized <= 2 ? 2 : normalized <= 5 ? 5 : 10;
  return roundFloat(factor * magnitude);
}

/** An axis: its domain widened to whole steps, and the tick values in it. */
export interface Axis {
  min: number;
  max: number;
  step: number;
  ticks: number[];
}

/**
 * A nice axis covering [min, max] with at most about `maxTicks` intervals. An empty range (one
 * value) is widened by 10% of the value (or by 1 around 0) so the value sits inside the plot.
 */
export function niceAxis(min: number, max: number, maxTicks = 5): Axis {
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) throw new Error(`niceAxis: need finite min <= max, got [${min}, ${max}]`);
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / maxTicks);
  const first = Math.floor(roundFloat(min / step));
  const last = Math.ceil(roundFloat(max / step));
  const ticks = Array.from({ length: last - first + 1 }, (_, i) => roundFloat((first + i) * step));
  return { min: ticks[0]!, max: ticks[ticks.length - 1]!, step, ticks };
}

/** A count axis from 0: nice integer ticks (a step below 1 would label fractions of a sample). */
function countAxis(maxCount: number): Axis {
  const axis = niceAxis(0, maxCount);
  if (axis.step >= 1) return axis;
  const max = Math.ceil(maxCount);
  return { min: 0, max, step: 1, ticks: Array.from({ length: max + 1 }, (_, i) => i) };
}

/** Tick label with as many decimals as the step needs. */
function formatTick(value: number, step: number): string {
  const decimals = Math.min(8, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  return value.toFixed(decimals);
}

/** Removes binary noise such as 0.30000000000000004 from computed edges and ticks. */
function roundFloat(x: number): number {
  return Number(x.toPrecision(12));
}

/** Coordinates in the SVG are written with 2 decimals: enough for the eye, short in the file. */
function px(x: number): string {
  return String(Math.round(x * 100) / 100);
}

/** Size of a chart and the margins that hold the axes, in SVG user units (CSS pixels). */
interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}
const FRAME: Frame = { width: 400, height: 230, left: 52, right: 14, top: 12, bottom: 38 };

/** Maps a value in [domainMin, domainMax] to [rangeMin, rangeMax]. */
function scale(domainMin: number, domainMax: number, rangeMin: number, rangeMax: number): (v: number) => number {
  const span = domainMax - domainMin;
  return (v) => rangeMin + ((v - domainMin) / span) * (rangeMax - rangeMin);
}

// Styling is written as presentation attributes, not page CSS, so that a chart copied out of the
// page (as an .svg file) looks the same.
const GRID_COLOR = '#e7eaee';
const AXIS_COLOR = '#6b7680';
const TEXT_STYLE = 'font-family="system-ui, sans-serif" font-size="11" fill="#5b6670"';
const TITLE_STYLE = 'font-family="system-ui, sans-serif" font-size="11" fill="#1d2329"';

/** Grid lines, tick labels and axis titles of a plot area. */
function axesMarkup(frame: Frame, x: { ticks: { value: number; label: string }[]; at: (v: number) => number; title: string }, y: Axis & { at: (v: number) => number; title: string }): string {
  const plotRight = frame.width - frame.right;
  const plotBottom = frame.height - frame.bottom;
  const parts: string[] = ['<g class="axes">'];
  for (const tick of y.ticks) {
    const ty = px(y.at(tick));
    parts.push(`<line class="gridline" x1="${frame.left}" x2="${plotRight}" y1="${ty}" y2="${ty}" stroke="${GRID_COLOR}"/>`);
    parts.push(`<text class="tick" x="${frame.left - 6}" y="${ty}" text-anchor="end" dominant-baseline="middle" ${TEXT_STYLE}>${escapeHtml(formatTick(tick, y.step))}</text>`);
  }
  for (const tick of x.ticks) {
    const tx = px(x.at(tick.value));
    parts.push(`<line class="tickmark" x1="${tx}" x2="${tx}" y1="${plotBottom}" y2="${plotBottom + 4}" stroke="${AXIS_COLOR}"/>`);
    parts.push(`<text class="tick" x="${tx}" y="${plotBottom + 15}" text-anchor="middle" ${TEXT_STYLE}>${escapeHtml(tick.label)}</text>`);
  }
  parts.push(`<line class="axis" x1="${frame.left}" x2="${plotRight}" y1="${plotBottom}" y2="${plotBottom}" stroke="${AXIS_COLOR}"/>`);
  parts.push(`<line class="axis" x1="${frame.left}" x2="${frame.left}" y1="${frame.top}" y2="${plotBottom}" stroke="${AXIS_COLOR}"/>`);
  parts.push(`<text class="axis-title" x="${px((frame.left + plotRight) / 2)}" y="${frame.height - 4}" text-anchor="middle" ${TITLE_STYLE}>${escapeHtml(x.title)}</text>`);
  if (y.title !== '') {
    const cy = px((frame.top + plotBottom) / 2);
    parts.push(`<text class="axis-title" x="12" y="${cy}" text-anchor="middle" transform="rotate(-90 12 ${cy})" ${TITLE_STYLE}>${escapeHtml(y.title)}</text>`);
  }
  parts.push('</g>');
  return parts.join('');
}

/** A legend as HTML (it wraps with the page, unlike SVG text): one swatch and name per series. */
function legendMarkup(names: readonly string[]): string {
  if (names.length === 0) return '';
  const items = names.map((name, i) => `<span class="key"><span class="swatch" style="background:${SERIES_COLORS[i % SERIES_COLORS.length]}"></span>${escapeHtml(name)}</span>`);
  return `<div class="legend">${items.join('')}</div>`;
}

/** A figure with a title, a chart and a legend; `chartId` becomes `data-chart` (tests and links find charts by it). */
function figure(chartId: string, title: string, svg: string, legendNames: readonly string[], attributes = ''): string {
  return (
    `<figure class="chart" data-chart="${escapeHtml(chartId)}"${attributes}>` +
    `<figcaption>${escapeHtml(title)}</figcaption>${svg}${legendMarkup(legendNames)}</figure>`
  );
}

function emptyFigure(chartId: string, title: string, message: string): string {
  return `<figure class="chart empty" data-chart="${escapeHtml(chartId)}"><figcaption>${escapeHtml(title)}</figcaption><p class="no-data">${escapeHtml(message)}</p></figure>`;
}

/** One point of a series: `x` is a round or a training step. */
export interface ChartPoint {
  x: number;
  y: number;
}

export interface ChartSeries {
  /** Shown in the legend and written as `data-series`. */
  name: string;
  points: readonly ChartPoint[];
}

export interface LineChartOptions {
  /** `data-chart` of the figure: a stable id such as `rm/accuracy` or `sft/train/loss`. */
  id: string;
  title: string;
  xTitle: string;
  yTitle?: string;
  /** Label every integer x (rounds) instead of nice ticks (steps). */
  integerX?: boolean;
  /** A y range the axis always includes, e.g. [0, 1] for accuracies and win rates. */
  yInclude?: readonly [number, number];
  /** Shown instead of the chart when no series has a finite point. */
  emptyMessage?: string;
}

/**
 * A line chart of several series as a `<figure>` with inline SVG. Each finite point is a
 * `<circle class="point">` carrying `data-series`, `data-x` and `data-value` and a tooltip; lines
 * connect consecutive finite points of a series (sorted by x) and break at non-finite ones.
 */
export function lineChart(series: readonly ChartSeries[], options: LineChartOptions): string {
  const finite = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)));
  if (finite.length === 0) return emptyFigure(options.id, options.title, options.emptyMessage ?? 'no values recorded');
  const frame = FRAME;
  const ys = finite.map((p) => p.y);
  const yAxis = niceAxis(Math.min(...ys, ...(options.yInclude ?? [])), Math.max(...ys, ...(options.yInclude ?? [])));
  const xs = finite.map((p) => p.x);
  let xMin = Math.min(...xs);
  let xMax = Math.max(...xs);
  let xTicks: { value: number; label: string }[];
  if (options.integerX === true) {
    // Rounds: half a round of air on both sides so the first and last points are not on the frame.
    xTicks = Array.from({ length: Math.round(xMax - xMin) + 1 }, (_, i) => ({ value: xMin + i, label: String(xMin + i) }));
    xMin -= 0.5;
    xMax += 0.5;
  } else {
    const axis = niceAxis(xMin, xMax);
    xTicks = axis.ticks.map((value) => ({ value, label: formatTick(value, axis.step) }));
    xMin = axis.min;
    xMax = axis.max;
  }
  const xAt = scale(xMin, xMax, frame.left, frame.width - frame.right);
  const yAt = scale(yAxis.min, yAxis.max, frame.height - frame.bottom, frame.top);

  const parts: string[] = [`<svg class="plot" viewBox="0 0 ${frame.width} ${frame.height}" width="${frame.width}" height="${frame.height}" role="img" aria-label="${escapeHtml(options.title)}">`];
  parts.push(axesMarkup(frame, { ticks: xTicks, at: xAt, title: options.xTitle }, { ...yAxis, at: yAt, title: options.yTitle ?? '' }));
  series.forEach((s, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length];
    const points = [...s.points].filter((p) => Number.isFinite(p.x)).sort((a, b) => a.x - b.x);
    // Path commands: M starts a segment (first point, or after a gap), L continues it.
    let path = '';
    let inSegment = false;
    for (const p of points) {
      if (!Number.isFinite(p.y)) {
        inSegment = false;
        continue;
      }
      path += `${inSegment ? 'L' : 'M'}${px(xAt(p.x))} ${px(yAt(p.y))}`;
      inSegment = true;
    }
    parts.push(`<g class="series" data-series="${escapeHtml(s.name)}">`);
    if (path.includes('L')) parts.push(`<path class="line" d="${path}" fill="none" stroke="${color}" stroke-width="1.8"/>`);
    const radius = points.length > 60 ? 1.6 : 3.2;
    for (const p of points) {
      if (!Number.isFinite(p.y)) continue;
      parts.push(
        `<circle class="point" cx="${px(xAt(p.x))}" cy="${px(yAt(p.y))}" r="${radius}" fill="${color}" data-series="${escapeHtml(s.name)}" data-x="${String(p.x)}" data-value="${String(p.y)}">` +
          `<title>${escapeHtml(`${s.name} · ${options.xTitle} ${p.x}: ${formatValue(p.y, 4)}`)}</title></circle>`,
      );
    }
    parts.push('</g>');
  });
  parts.push('</svg>');
  return figure(options.id, options.title, parts.join(''), series.map((s) => s.name));
}

/**
 * Bin edges on round numbers covering [min, max] in at most `maxBins` equal bins: the bin width is
 * the nice step of (max − min) / maxBins and the first edge the multiple of it at or below min.
 * A single value (min = max) is widened by 5% of it (0.5 around 0), so it gets bins around it.
 */
export function histogramEdges(min: number, max: number, maxBins = 12): number[] {
  if (!Number.isInteger(maxBins) || maxBins < 1) throw new Error(`histogramEdges: maxBins must be an integer >= 1, got ${maxBins}`);
  if (!Number.isFinite(min) || !Number.isFinite(max) || min > max) throw new Error(`histogramEdges: need finite min <= max, got [${min}, ${max}]`);
  if (min === max) {
    const pad = min === 0 ? 0.5 : Math.abs(min) * 0.05;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / maxBins);
  const first = Math.floor(roundFloat(min / step));
  const numBins = Math.max(1, Math.ceil(roundFloat(max / step)) - first);
  return Array.from({ length: numBins + 1 }, (_, i) => roundFloat((first + i) * step));
}

/**
 * Counts of `values` per bin: bin i is [edges[i], edges[i+1]), the last bin also takes its upper
 * edge. Values outside [edges[0], edges[n]] and non-finite values are not counted.
 */
export function binValues(values: readonly number[], edges: readonly number[]): number[] {
  if (edges.length < 2) throw new Error(`binValues: need at least 2 edges, got ${edges.length}`);
  const counts = new Array<number>(edges.length - 1).fill(0);
  const last = edges.length - 1;
  for (const v of values) {
    if (!Number.isFinite(v) || v < edges[0]! || v > edges[last]!) continue;
    // Binary search for the last edge <= v; v equal to the top edge falls in the last bin.
    let lo = 0;
    let hi = last;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (edges[mid]! <= v) lo = mid;
      else hi = mid;
    }
    counts[lo]! += 1;
  }
  return counts;
}

export interface HistogramOptions {
  id: string;
  title: string;
  xTitle: string;
  /** Bin edges shared by every histogram that should be compared (e.g. all rounds of a run). */
  edges: readonly number[];
  /** The highest count of any histogram compared with this one, so their y axes match; default: this one's. */
  maxCount?: number;
}

/** Summary of the values a histogram draws, written as data attributes of its figure. */
export interface HistogramSummary {
  n: number;
  mean: number;
  min: number;
  max: number;
}

export function summarize(values: readonly number[]): HistogramSummary {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return { n: 0, mean: Number.NaN, min: Number.NaN, max: Number.NaN };
  return { n: finite.length, mean: finite.reduce((a, b) => a + b, 0) / finite.length, min: Math.min(...finite), max: Math.max(...finite) };
}

/**
 * A histogram of the first series with the later ones drawn over it in narrower bars (they are
 * subsets, e.g. the samples rejection sampling selected). The figure carries `data-n`,
 * `data-mean`, `data-min` and `data-max` of the first series; every bin of every series is a
 * `<rect class="bar">`, empty bins included (height 0), with its count in `data-value`.
 */
export function histogram(series: readonly { name: string; values: readonly number[] }[], options: HistogramOptions): string {
  const all = series[0];
  if (all === undefined || all.values.filter(Number.isFinite).length === 0) return emptyFigure(options.id, options.title, 'no scored samples');
  const frame = FRAME;
  const edges = options.edges;
  const counts = series.map((s) => binValues(s.values, edges));
  const maxCount = Math.max(options.maxCount ?? 0, ...counts.flat(), 1);
  const yAxis = countAxis(maxCount);
  const xAt = scale(edges[0]!, edges[edges.length - 1]!, frame.left, frame.width - frame.right);
  const yAt = scale(0, yAxis.max, frame.height - frame.bottom, frame.top);
  const binWidth = edges[1]! - edges[0]!;
  const labelEvery = Math.ceil((edges.length - 1) / 6);
  const xTicks = edges
    .map((value, i) => ({ value, i }))
    .filter(({ i }) => i % labelEvery === 0 || i === edges.length - 1)
    .map(({ value }) => ({ value, label: formatTick(value, binWidth) }));

  const parts: string[] = [`<svg class="plot" viewBox="0 0 ${frame.width} ${frame.height}" width="${frame.width}" height="${frame.height}" role="img" aria-label="${escapeHtml(options.title)}">`];
  parts.push(axesMarkup(frame, { ticks: xTicks, at: xAt, title: options.xTitle }, { ...yAxis, at: yAt, title: 'samples' }));
  series.forEach((s, k) => {
    const color = SERIES_COLORS[k % SERIES_COLORS.length];
    // Later series are inset so the bar of the whole stays visible around them.
    const inset = k === 0 ? 0.5 : 0.5 + k * 0.2 * (xAt(edges[1]!) - xAt(edges[0]!));
    parts.push(`<g class="series" data-series="${escapeHtml(s.name)}">`);
    counts[k]!.forEach((count, i) => {
      const x0 = xAt(edges[i]!) + inset;
      const x1 = xAt(edges[i + 1]!) - inset;
      const top = yAt(count);
      const closing = i === counts[k]!.length - 1 ? ']' : ')';
      parts.push(
        `<rect class="bar" x="${px(x0)}" y="${px(top)}" width="${px(Math.max(0, x1 - x0))}" height="${px(yAt(0) - top)}" fill="${color}" fill-opacity="${k === 0 ? 0.55 : 0.9}" ` +
          `data-series="${escapeHtml(s.name)}" data-bin="${i}" data-lo="${String(edges[i])}" data-hi="${String(edges[i + 1])}" data-value="${count}">` +
          `<title>${escapeHtml(`${s.name}: ${count} in [${edges[i]}, ${edges[i + 1]}${closing}`)}</title></rect>`,
      );
    });
    parts.push('</g>');
  });
  parts.push('</svg>');
  const stats = summarize(all.values);
  const attributes = ` data-n="${stats.n}" data-mean="${String(stats.mean)}" data-min="${String(stats.min)}" data-max="${String(stats.max)}"`;
  return figure(options.id, options.title, parts.join(''), series.map((s) => s.name), attributes);
}
