// What the page itself sees: its own PerformanceObservers, registered before
// anything else runs, record every entry into window.__truth. The tests compare
// what the collector stored against this.
(function () {
  var T = (window.__truth = {entries: {}, errors: [], marks: {}});
  addEventListener('error', function (e) {
    T.errors.push('error: ' + e.message);
  });
  addEventListener('unhandledrejection', function (e) {
    T.errors.push('rejection: ' + e.reason);
  });
  var id = function (n) {
    return n && n.nodeType === 1 ? n.id || n.tagName.toLowerCase() : null;
  };
  [
    'largest-contentful-paint',
    'layout-shift',
    'longtask',
    'long-animation-frame',
    'event',
    'first-input',
    'paint',
  ].forEach(function (type) {
    T.entries[type] = [];
    var opts = {type: type, buffered: true};
    if (type === 'event') opts.durationThreshold = 16;
    new PerformanceObserver(function (list) {
      list.getEntries().forEach(function (e) {
        var j = e.toJSON();
        j.at = performance.now();
        if ('element' in e) j.element = id(e.element);
        if ('target' in e) j.target = id(e.target);
        if (e.sources) j.sources = e.sources.map(function (s) { return id(s.node); });
        T.entries[type].push(j);
      });
    }).observe(opts);
  });
  // Resource and navigation timing straight from the timeline, at call time.
  T.now = function () {
    return {
      navigation: performance.getEntriesByType('navigation')[0].toJSON(),
      resources: performance.getEntriesByType('resource').map(function (e) { return e.toJSON(); }),
      heapLimit: performance.memory ? performance.memory.jsHeapSizeLimit : null,
      connection: navigator.connection ? navigator.connection.effectiveType : '',
      userAgent: navigator.userAgent,
      origin: location.origin,
      now: performance.now(),
      timeOrigin: performance.timeOrigin,
    };
  };
})();
