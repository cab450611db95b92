/**
 * A page view: the hard page load, or one SPA soft page view after a route
 * change. It collects what the observers deliver while it is current and turns
 * into exactly one beacon body.
 *
 *     const view = newView(false, fixed);  // fixed: config and context fields
 *     view._add(entry);                    // resource, longtask, LoAF, event, layout-shift
 *     view._vital('LCP', 1200, {...}, 'navigate');
 *     JSON.stringify(view._wire(hasTasks));
 *
 * Members start with `_`: the build mangles them.
 */
import {generateUniqueID} from '#wv/generateUniqueID.js';
import {getNavigationEntry} from '#wv/getNavigationEntry.js';
import {getSelector} from '#wv/getSelector.js';
import {InteractionManager} from '#wv/InteractionManager.js';
import {LayoutShiftManager} from '#wv/LayoutShiftManager.js';
import {clip, guard} from './guard.js';
import {summarize} from './resources.js';

export const newView = (soft, fixed) => {
  const start = soft ? performance.now() : 0;
  const id = generateUniqueID();
  const url = location.href;
  const vitals = {};
  const entries = [];
  const tasks = {count: 0, total_ms: 0, tbt_ms: 0, max_ms: 0, loaf_count: 0, loaf_total_ms: 0};
  let inp, cls, shift, paint, memory;
  const vital = (name, value, attribution, navigation_type = 'soft-navigation') => {
    vitals[name] = {name, value, navigation_type, attribution};
  };
  if (soft) {
    // web-vitals measures INP and CLS over the whole document; a soft view
    // gets its own: same managers, fed only the entries of this view.
    inp = new InteractionManager();
    inp._resetInteractions();
    cls = new LayoutShiftManager();
    shift = 0;
    requestAnimationFrame(() => setTimeout(() => (paint = performance.now() - start)));
  }
  // Only allowed when crossOriginIsolated; it throws or rejects elsewhere.
  guard(() =>
    performance
      .measureUserAgentSpecificMemory()
      .then((m) => (memory = {used_bytes: m.bytes, source: 'measureUserAgentSpecificMemory'}))
      .catch(() => {}),
  )();

  return {
    _url: url,
    _vital: vital,

    /** One performance entry delivered while this view is current. */
    _add: (e) => {
      const t = tasks;
      const d = e.duration;
      const type = e.entryType;
      if (type == 'resource') entries.push(e);
      else if (type == 'longtask') {
        t.count++;
        t.total_ms += d;
        t.tbt_ms += Math.max(0, d - 50);
        t.max_ms = Math.max(t.max_ms, d);
      } else if (type == 'long-animation-frame') {
        t.loaf_count++;
        t.loaf_total_ms += d;
        for (const s of e.scripts) {
          if (!(s.duration <= t.worst_script_ms)) {
            t.worst_script = clip(s.sourceURL || s.invoker);
            t.worst_script_ms = s.duration;
          }
        }
      } else if (!soft) {
        // The hard view's INP and CLS come from web-vitals.
      } else if (type == 'layout-shift') {
        cls._processEntry(e);
        if (cls._sessionValue > shift) {
          shift = cls._sessionValue;
          const big = cls._sessionEntries.reduce((a, b) => (a.value > b.value ? a : b));
          vital('CLS', shift, {
            target: getSelector(big.sources.find((s) => s.node)?.node),
            time_ms: big.startTime,
            value: big.value,
          });
        }
      } else {
        inp._processEntry(e);
        const i = inp._estimateP98LongestInteraction();
        const x = i?.entries[0];
        if (x) {
          const end = x.startTime + x.duration;
          vital('INP', i._latency, {
            target: getSelector(x.target),
            type: x.name.startsWith('key') ? 'keyboard' : 'pointer',
            input_delay_ms: x.processingStart - x.startTime,
            processing_ms: Math.min(x.processingEnd, end) - x.processingStart,
            presentation_delay_ms: Math.max(0, end - x.processingEnd),
          });
        }
      }
    },

    /** The beacon body, in the collector's wire format (v1). */
    _wire: (hasTasks, n = !soft && getNavigationEntry(), m = performance.memory) => ({
      ...fixed,
      id,
      ts: (performance.timeOrigin + start) / 1e3,
      url: clip(url),
      soft,
      vitals: Object.values(vitals),
      nav: soft
        ? paint && {type: 'soft', load_ms: paint}
        : n && {
            type: n.type,
            dns_ms: n.domainLookupEnd - n.domainLookupStart,
            connect_ms: n.connectEnd - n.connectStart,
            tls_ms: n.secureConnectionStart ? n.connectEnd - n.secureConnectionStart : 0,
            request_ms: n.responseStart - n.requestStart,
            response_ms: n.responseEnd - n.responseStart,
            dom_interactive_ms: n.domInteractive || undefined,
            dom_complete_ms: n.domComplete || undefined,
            load_ms: n.loadEventEnd || undefined,
            transfer_bytes: n.transferSize || 0,
          },
      ...summarize(entries, location.origin),
      long_tasks: hasTasks && tasks,
      memory:
        memory ||
        (m && {
          used_bytes: m.usedJSHeapSize,
          total_bytes: m.totalJSHeapSize,
          limit_bytes: m.jsHeapSizeLimit,
          source: 'performance.memory',
        }),
    }),
  };
};
