/**
 * Sparklines: `<span class="spark" data-spark='[3, 5, null, 4]'></span>` becomes
 * a 100×24 inline SVG, one polyline per run of values (null is a gap; a value
 * alone between gaps is a dot), built with DOM calls only. `data-drawn` is then
 * the number of values drawn.
 */
const NS = 'http://www.w3.org/2000/svg';
const W = 100;
const H = 24;
const PAD = 2;

const svg = (tag, attrs) => {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};

const parse = (el) => {
  try {
    const v = JSON.parse(el.dataset.spark);
    return Array.isArray(v) ? v.map((n) => (typeof n == 'number' && isFinite(n) ? n : null)) : [];
  } catch {
    return [];
  }
};

/** Draw one `.spark` element. */
export const drawSpark = (el) => {
  const values = parse(el);
  const present = values.filter((v) => v != null);
  const root = svg('svg', {viewBox: `0 0 ${W} ${H}`, width: W, height: H, 'aria-hidden': 'true', focusable: 'false'});
  if (present.length) {
    const lo = Math.min(...present);
    const span = Math.max(...present) - lo;
    const step = (W - 2 * PAD) / Math.max(1, values.length - 1);
    const at = (v, i) => [
      (PAD + i * step).toFixed(1),
      (span ? H - PAD - ((v - lo) / span) * (H - 2 * PAD) : H / 2).toFixed(1),
    ];
    let run = [];
    const end = () => {
      if (run.length == 1) {
        root.append(svg('circle', {cx: run[0][0], cy: run[0][1], r: 1.5, fill: 'currentColor'}));
      } else if (run.length) {
        const points = run.map((p) => p.join(',')).join(' ');
        root.append(
          svg('polyline', {points, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5, 'stroke-linejoin': 'round'}),
        );
      }
      run = [];
    };
    values.forEach((v, i) => (v == null ? end() : run.push(at(v, i))));
    end();
  }
  el.replaceChildren(root);
  el.dataset.drawn = String(present.length);
};
