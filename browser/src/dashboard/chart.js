/**
 * Line charts drawn with uPlot from the markup the server renders:
 *
 *     <div class="chart" data-chart='{"title": "LCP p75", "unit": "ms",
 *          "x": [1764000000, ...], "series": [{"label": "p75", "values": [2100, null, ...]}],
 *          "thresholds": {"good": 2500, "poor": 4000}}'></div>
 *
 * One line per series in the Okabe–Ito palette, gaps where a value is null,
 * axes and legend formatted by unit, time in UTC (as the range inputs are),
 * thresholds as dashed lines. The element's `data-drawn` is then the number of
 * non-null points drawn; "0" when there is nothing to draw.
 */
import uPlot from 'uplot';
import {formatter} from './format.js';

/** Okabe & Ito's colour-blind-safe palette, in the order lines take it. */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#000000', '#F0E442'];
const THRESHOLDS = [
  ['good', '#009E73'],
  ['poor', '#D55E00'],
];
const HEIGHT = 220;
// Time ticks in 24-hour UTC: [tick step (s), tick, then the line under the
// first tick and under each new year, month, day, hour, minute, second; mode].
const TIME_TICKS = [
  [86400 * 365, '{YYYY}', null, null, null, null, null, null, 1],
  [86400 * 28, '{MMM}', '\n{YYYY}', null, null, null, null, null, 1],
  [86400, '{MMM} {D}', '\n{YYYY}', null, null, null, null, null, 1],
  [3600, '{HH}:{mm}', '\n{MMM} {D}', null, '\n{MMM} {D}', null, null, null, 1],
  [60, '{HH}:{mm}', '\n{MMM} {D}', null, '\n{MMM} {D}', null, null, null, 1],
  [1, ':{ss}', '\n{MMM} {D} {HH}:{mm}', null, '\n{MMM} {D} {HH}:{mm}', null, '\n{HH}:{mm}', null, 1],
];
// Byte ticks on 1, 2, 5 × powers of 1024, so they read 512 B, 1 KB, 2 KB, 5 KB…
const BYTE_STEPS = [0, 1, 2, 3, 4].flatMap((k) => [1, 2, 5, 10, 20, 50, 100, 200, 500].map((m) => m * 1024 ** k));

/** Every live chart, by its element, so a resize or a refresh can reach it. */
const plots = new Map();

const finite = (v) => typeof v == 'number' && isFinite(v);

const text = (tag, className, content) => {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = content;
  return el;
};

const contentWidth = (el) => {
  const s = getComputedStyle(el);
  return Math.max(120, el.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight));
};

/** The y axis as wide as its longest label (uPlot's own recipe). */
const axisSize = (u, values, i, cycle) => {
  const axis = u.axes[i];
  if (cycle > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (v.length > a.length ? v : a), '');
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / uPlot.pxRatio;
  }
  return Math.ceil(size);
};

/** From zero (or the lowest value), up to the data, and to a threshold that is near it. */
const yRange = (limits) => (u, lo, hi) => {
  if (lo == null || hi == null || (lo == 0 && hi == 0)) return [0, 1]; // all zero: 0 to 1 (100 % for a ratio)
  for (const t of limits) if (t > hi && t <= 2 * hi) hi = t;
  return uPlot.rangeNum(Math.min(0, lo), hi, 0.1, true);
};

const thresholdHook = (limits) => (u) => {
  const {ctx, bbox} = u;
  const px = uPlot.pxRatio;
  ctx.save();
  ctx.lineWidth = px;
  ctx.setLineDash([6 * px, 4 * px]);
  ctx.font = `${11 * px}px system-ui, sans-serif`;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'bottom';
  for (const [name, color] of THRESHOLDS) {
    if (!(name in limits)) continue;
    const y = Math.round(u.valToPos(limits[name], 'y', true));
    if (y < bbox.top || y > bbox.top + bbox.height) continue;
    ctx.strokeStyle = ctx.fillStyle = color;
    ctx.beginPath();
    ctx.moveTo(bbox.left, y);
    ctx.lineTo(bbox.left + bbox.width, y);
    ctx.stroke();
    ctx.fillText(name, bbox.left + bbox.width - 4 * px, y - 2 * px);
  }
  ctx.restore();
};

const parse = (el) => {
  try {
    const spec = JSON.parse(el.dataset.chart);
    return spec && typeof spec == 'object' ? spec : null;
  } catch {
    return null;
  }
};

const isolated = (values) =>
  values.some((v, i) => v != null && values[i - 1] == null && values[i + 1] == null);

const options = (el, spec, series) => {
  const fmt = formatter(spec.unit);
  const limits = {};
  for (const [name] of THRESHOLDS) if (finite(spec.thresholds?.[name])) limits[name] = spec.thresholds[name];
  const style = getComputedStyle(el);
  const grid = style.getPropertyValue('--grid').trim() || 'rgba(128,128,128,.25)';
  const axis = {stroke: style.color, grid: {stroke: grid, width: 1}, ticks: {stroke: grid, width: 1}};
  // On a dark background the dark blue and black swap for sky blue and grey.
  const dark = matchMedia('(prefers-color-scheme: dark)').matches;
  const shade = (c) => (dark ? {'#0072B2': '#56B4E9', '#56B4E9': '#0072B2', '#000000': '#BBBBBB'}[c] || c : c);
  return {
    width: contentWidth(el),
    height: HEIGHT,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
    scales: {y: {range: yRange(Object.values(limits))}},
    series: [
      {label: 'Time (UTC)', value: '{YYYY}-{MM}-{DD} {HH}:{mm}'},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: shade(PALETTE[i % PALETTE.length]),
        width: 1.5,
        value: (u, v) => fmt(v),
        // a value with gaps on both sides has no line to draw: mark it
        ...(isolated(s.values) && {points: {show: true, size: 5}}),
      })),
    ],
    axes: [
      {...axis, values: TIME_TICKS},
      {
        ...axis,
        values: (u, splits) => splits.map(fmt),
        size: axisSize,
        ...(spec.unit == 'bytes' && {incrs: BYTE_STEPS}),
      },
    ],
    hooks: {draw: [thresholdHook(limits)]},
    cursor: {drag: {x: false, y: false}},
  };
};

/** Draw (or redraw) one `.chart` element. */
export const drawChart = (el) => {
  forget(el);
  const spec = parse(el);
  const xs = Array.isArray(spec?.x) ? spec.x : [];
  const keep = xs.flatMap((t, j) => (finite(t) ? [j] : []));
  const x = keep.map((j) => xs[j]);
  const series = (Array.isArray(spec?.series) ? spec.series : []).map((s, i) => ({
    label: String(s?.label ?? `series ${i + 1}`),
    values: keep.map((j) => (finite(s?.values?.[j]) ? s.values[j] : null)),
  }));
  const drawn = series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0);
  el.replaceChildren();
  if (spec?.title) el.append(text('div', 'chart-title', String(spec.title)));
  el.dataset.drawn = String(drawn);
  if (!spec) {
    el.append(text('p', 'muted no-data', 'Chart data unavailable'));
  } else if (!drawn) {
    el.append(text('p', 'muted no-data', 'No data in this range'));
  } else {
    const plot = document.createElement('div');
    el.append(plot);
    plots.set(el, new uPlot(options(el, spec, series), [x, ...series.map((s) => s.values)], plot));
  }
};

/** Destroy the charts inside `root` (before it leaves the page). */
export const forget = (root) => {
  for (const [el, u] of plots) {
    if (root.contains(el)) {
      u.destroy();
      plots.delete(el);
    }
  }
};

/** Fit every chart to its container again (after the window changed size). */
export const resizeCharts = () => {
  for (const [el, u] of plots) {
    if (el.isConnected) u.setSize({width: contentWidth(el), height: HEIGHT});
    else forget(el);
  }
};
