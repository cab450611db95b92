/**
 * perfpulse RUM agent. Configure it before it loads:
 *
 *     window.perfpulse = {endpoint: 'https://rum.example.com', key: 'PUBLIC_KEY',
 *                         release: '1.4.2', environment: 'production', sampleRate: 1};
 *
 * It does nothing without `endpoint` and `key`, decides sampling once per page
 * load, sends one beacon per page view (hard or SPA soft) when the view ends —
 * page hidden (which includes unload) or the next route change — and never
 * throws into the page. See docs/browser-agent.md.
 */
import {observe} from '#wv/observe.js';
import {context} from './context.js';
import {guard} from './guard.js';
import {send} from './transport.js';
import {addInput, addTask, newView, toWire, vital} from './view.js';
import {firstInput, watchVitals} from './vitals.js';

const start = (config) => {
  const rate = Math.min(1, +config.sampleRate || (config.sampleRate == null ? 1 : 0));
  if (!config.endpoint || !config.key || !(Math.random() < rate)) return;
  const cfg = {...config, rate};
  const url = String(config.endpoint).replace(/\/+$/, '') + '/api/v1/rum?key=' + encodeURIComponent(config.key);
  const ctx = context();
  const hard = newView(false, 0);
  let view = hard;
  let navType = 'navigate'; // web-vitals' navigationType, for FID too

  // Everything an observer delivers belongs to the view current at delivery.
  const observers = [];
  const watch = (type, fn, opts) => {
    const cb = guard((list) => list.forEach((e) => fn(view, e)));
    const po = observe(type, cb, opts);
    if (po) observers.push([po, cb]);
    return po;
  };
  const hasTasks = watch('longtask', addTask);
  watch('long-animation-frame', addTask);
  watch('resource', (v, e) => e.name.startsWith(url.split('?')[0]) || v.entries.push(e));
  watch('first-input', (v, e) => hard.sent || firstInput(e, (...a) => vital(hard, ...a), navType));
  watch('event', (v, e) => v.soft && addInput(v, e), {durationThreshold: 40});
  watch('layout-shift', (v, e) => v.soft && addInput(v, e));
  watchVitals((name, ...a) => vital(hard, name, ...a) || (navType = a[2]));

  const end = () => {
    for (const [po, cb] of observers) cb(po.takeRecords());
    if (view.sent) return;
    view.sent = 1;
    const body = toWire(view, cfg, ctx);
    if (!hasTasks) delete body.long_tasks;
    send(url, JSON.stringify(body));
  };

  // SPA: a History API URL change ends the current view and starts a soft one.
  const route = guard(() => {
    if (location.href != view.url) {
      end();
      view = newView(true, performance.now());
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
    guard(() => document.visibilityState == 'hidden' && end()),
  );
};

guard(start)(window.perfpulse || {});
