/**
 * perfpulse RUM agent. Configure it before it loads:
 *
 *     window.perfpulse = {endpoint: 'https://rum.example.com', key: 'PUBLIC_KEY',
 *                         release: '1.4.2', environment: 'production', sampleRate: 1};
 *
 * It does nothing without `endpoint` and `key` (a missing or unreadable config
 * throws inside `guard` and leaves the agent off), decides sampling once per
 * page load, sends one beacon per page view (hard or SPA soft) when the view
 * ends — page hidden (which includes unload) or the next route change — and
 * never throws into the page. See docs/browser-agent.md.
 */
import {getSelector} from '#wv/getSelector.js';
import {observe} from '#wv/observe.js';
import {context} from './context.js';
import {clip, guard} from './guard.js';
import {send} from './transport.js';
import {newView} from './view.js';
import {watchVitals} from './vitals.js';

const start = (c) => {
  const rate = Math.min(1, +(c.sampleRate ?? 1) || 0);
  if (!c.endpoint || !c.key || !(Math.random() < rate)) return;
  const base = (c.endpoint + '').replace(/\/+$/, '') + '/api/v1/rum';
  const url = base + '?key=' + encodeURIComponent(c.key);
  // The fields every beacon of this page load shares.
  const fixed = {
    v: 1,
    service: clip(c.service || 'web', 200),
    environment: clip(c.environment || 'production', 200),
    release: clip(c.release || '', 200),
    ...context(),
    sample_rate: rate,
  };
  const hard = newView(false, fixed);
  let view = hard;
  let navType = 'navigate'; // web-vitals' navigationType, for FID too

  // Everything an observer delivers belongs to the view current at delivery.
  const flush = [];
  const add = (e) => view._add(e);
  const watch = (type, fn = add, opts) => {
    const cb = guard((list) => list.forEach(fn));
    const po = observe(type, cb, opts);
    if (po) flush.push(() => cb(po.takeRecords()));
    return po;
  };
  const hasTasks = watch('longtask');
  watch('long-animation-frame');
  watch('resource', (e) => e.name.startsWith(base) || add(e)); // not our own beacons
  watch('first-input', (e) =>
    view != hard ||
    hard._vital('FID', e.processingStart - e.startTime, {target: getSelector(e.target), type: e.name}, navType),
  );
  watch('event', add, {durationThreshold: 40});
  watch('layout-shift');
  watchVitals((m) => hard._vital(m.name, m.value, m.attribution, (navType = m.navigationType)));

  const end = () => {
    flush.map((f) => f());
    if (view._sent) return;
    view._sent = 1;
    send(url, JSON.stringify(view._wire(hasTasks)));
  };

  // SPA: a History API URL change ends the current view and starts a soft one.
  const route = guard(() => {
    if (location.href != view._url) {
      end();
      view = newView(true, fixed);
    }
  });
  for (const name of ['pushState', 'replaceState']) {
    const original = history[name];
    history[name] = function (...args) {
      const result = original.apply(this, args);
      route();
      return result;
    };
  }
  addEventListener('popstate', route);
  // The view ends when the page is hidden: tab switch, app switch, and also
  // unload, where browsers fire pagehide first and then visibilitychange→hidden.
  // Sending at pagehide would go before web-vitals' own flush (pending INP
  // entries, last layout shifts), which runs on that visibilitychange; this
  // listener is on document, so it runs after web-vitals' window listeners.
  document.addEventListener(
    'visibilitychange',
    guard(() => document.visibilityState === 'hidden' && end()),
  );
};

guard(start)(window.perfpulse);
