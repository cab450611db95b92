/**
 * perfpulse dashboard: the client side of the server-rendered pages.
 *
 * On DOMContentLoaded it draws every chart (`.chart[data-chart]`) and sparkline
 * (`.spark[data-spark]`), makes `table.sortable` headers sortable, fits the
 * labels of distribution bars (`.dist`), and wires the filter bar (`#filters`),
 * the copy buttons and live refresh (`main#content`, `#live`). Content added
 * later is set up with
 *
 *     window.perfpulse.init(element);
 *
 * The page needs no inline script: its CSP is `script-src 'self'`.
 */
import {drawChart, forget, resizeCharts} from './chart.js';
import {watchCopy} from './copy.js';
import {fitDist} from './dist.js';
import {watchFilters} from './filters.js';
import {startLive} from './live.js';
import {drawSpark} from './spark.js';
import {initSortable, restoreSort, sortState, watchSorting} from './sortable.js';

const RESIZE_MS = 150;

/** `root` itself when it matches, and its descendants that match. */
const within = (root, selector) => [...(root.matches?.(selector) ? [root] : []), ...root.querySelectorAll(selector)];

/** One bad element must not stop the others: report it and go on. */
const each = (root, selector, fn) => {
  for (const el of within(root, selector)) {
    try {
      fn(el);
    } catch (e) {
      console.error('perfpulse:', selector, e);
    }
  }
};

/** Draw the charts and sparklines in `root`, make its tables sortable, fit its distribution bars. */
export const init = (root = document) => {
  each(root, '.chart[data-chart]', drawChart);
  each(root, '.spark[data-spark]', drawSpark);
  initSortable(root);
  fitDist(root);
};

/** Put a refreshed fragment into `main`, keeping each table's sort order. */
const swap = (main, html) => {
  const sorted = sortState(main);
  const t = document.createElement('template');
  t.innerHTML = html;
  forget(main);
  main.replaceChildren(t.content);
  init(main);
  restoreSort(main, sorted);
};

let resizing = 0;
const resized = () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => {
    resizeCharts();
    fitDist(document);
  }, RESIZE_MS);
};

const start = () => {
  init(document);
  addEventListener('resize', resized);
  watchSorting();
  watchFilters();
  watchCopy();
  startLive(swap);
};

// The RUM agent reads its settings from `window.perfpulse`: add to it, never replace it.
window.perfpulse = Object.assign(window.perfpulse || {}, {init});
if (document.readyState == 'loading') addEventListener('DOMContentLoaded', start);
else start();
