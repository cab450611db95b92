/**
 * A page view: the hard page load, or one SPA soft page view after a route
 * change. It collects what the observers deliver while it is current and turns
 * into exactly one beacon body (`toWire`).
 */
import {generateUniqueID} from '#wv/generateUniqueID.js';
import {getNavigationEntry} from '#wv/getNavigationEntry.js';
import {getSelector} from '#wv/getSelector.js';
import {InteractionManager} from '#wv/InteractionManager.js';
import {LayoutShiftManager} from '#wv/LayoutShiftManager.js';
import {bytes, clip} from './guard.js';
import {summarize} from './resources.js';

export const newView = (soft, start) => {
  const view = {
    id: generateUniqueID(),
    ts: (performance.timeOrigin + start) / 1e3,
    url: location.href,
    soft,
    start,
    vitals: {},
    entries: [],
    tasks: {count: 0, total_ms: 0, tbt_ms: 0, max_ms: 0, loaf_count: 0, loaf_total_ms: 0},
  };
  if (soft) {
    // web-vitals measures INP and CLS over the whole document; a soft view
    // gets its own: same managers, fed only the entries of this view.
    view.inp = new InteractionManager();
    view.inp._resetInteractions();
    view.cls = new LayoutShiftManager();
    view.shift = 0;
    requestAnimationFrame(() =>
      setTimeout(() => {
        view.paint = performance.now() - start;
      }),
    );
  }
  try {
    performance
      .measureUserAgentSpecificMemory?.()
      .then((m) => (view.memory = {used_bytes: m.bytes, source: 'measureUserAgentSpecificMemory'}))
      .catch(() => {});
  } catch {
    // Only allowed when crossOriginIsolated.
  }
  return view;
};

/** Long tasks and long animation frames: counts, totals, the worst script. */
export const addTask = (view, e) => {
  const t = view.tasks;
  const d = e.duration;
  if (e.entryType == 'longtask') {
    t.count++;
    t.total_ms += d;
    t.tbt_ms += Math.max(0, d - 50);
    t.max_ms = Math.max(t.max_ms, d);
  } else {
    t.loaf_count++;
    t.loaf_total_ms += d;
    for (const s of e.scripts) {
      if (!(s.duration <= t.worst_script_ms)) {
        t.worst_script = clip(s.sourceURL || s.invoker);
        t.worst_script_ms = s.duration;
      }
    }
  }
};

/** Soft views only: their own INP (p98 of their interactions) and CLS. */
export const addInput = (view, e) => {
  if (e.entryType == 'layout-shift') {
    const m = view.cls;
    m._processEntry(e);
    if (m._sessionValue > view.shift) {
      view.shift = m._sessionValue;
      const big = m._sessionEntries.reduce((a, b) => (b.value > a.value ? b : a));
      vital(view, 'CLS', view.shift, {
        target: getSelector(big.sources.find((s) => s.node)?.node),
        time_ms: big.startTime,
        value: big.value,
      });
    }
  } else {
    view.inp._processEntry(e);
    const i = view.inp._estimateP98LongestInteraction();
    const x = i?.entries[0];
    if (x) {
      const end = x.startTime + x.duration;
      vital(view, 'INP', i._latency, {
        target: getSelector(x.target),
        type: x.name.startsWith('key') ? 'keyboard' : 'pointer',
        input_delay_ms: x.processingStart - x.startTime,
        processing_ms: Math.min(x.processingEnd, end) - x.processingStart,
        presentation_delay_ms: Math.max(0, end - x.processingEnd),
      });
    }
  }
};

export const vital = (view, name, value, attribution, type = 'soft-navigation') => {
  view.vitals[name] = {name, value, navigation_type: type, attribution};
};

const navTiming = () => {
  const n = getNavigationEntry();
  return (
    n && {
      type: n.type,
      dns_ms: n.domainLookupEnd - n.domainLookupStart,
      connect_ms: n.connectEnd - n.connectStart,
      tls_ms: n.secureConnectionStart ? n.connectEnd - n.secureConnectionStart : 0,
      request_ms: n.responseStart - n.requestStart,
      response_ms: n.responseEnd - n.responseStart,
      dom_interactive_ms: n.domInteractive || undefined,
      dom_complete_ms: n.domComplete || undefined,
      load_ms: n.loadEventEnd || undefined,
      transfer_bytes: bytes(n.transferSize),
    }
  );
};

const heap = (view) => {
  const m = performance.memory;
  return (
    view.memory ||
    (m && {
      used_bytes: m.usedJSHeapSize,
      total_bytes: m.totalJSHeapSize,
      limit_bytes: m.jsHeapSizeLimit,
      source: 'performance.memory',
    })
  );
};

/** The beacon body for `view`, in the collector's wire format (v1). */
export const toWire = (view, cfg, ctx) => ({
  v: 1,
  id: view.id,
  ts: view.ts,
  url: clip(view.url),
  soft: view.soft,
  service: clip(cfg.service || 'web', 200),
  environment: clip(cfg.environment || 'production', 200),
  release: clip(cfg.release || '', 200),
  ...ctx,
  sample_rate: cfg.rate,
  vitals: Object.values(view.vitals),
  nav: view.soft ? view.paint && {type: 'soft', load_ms: view.paint} : navTiming(),
  ...summarize(view.entries, location.origin),
  long_tasks: view.tasks,
  memory: heap(view),
});
