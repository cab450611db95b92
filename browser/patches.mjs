// Build-time edits to web-vitals 5.3.0's ES modules (dist/modules), applied by
// build.mjs. The agent's budget is 5 KB gzip for everything, and web-vitals'
// five attribution functions alone were 4.2 KB; these edits bring them to
// 3.1 KB. None of them changes a value or an attribution field the agent sends:
// they remove what the agent never reads (ratings, deltas, load states, entry
// objects, options it never passes, bfcache re-arming) and let the attribution
// objects carry the wire format's key names directly, so the agent needs no
// mapping table (docs/browser-agent.md, "Size budget").
//
// Every edit must match the pinned source exactly once (a `/g` regex: at least
// once), or the build fails: upgrading web-vitals means revisiting this file.

// `a b c d` → rename property `a` to `b` and `c` to `d` throughout one file.
const rename = (pairs) => {
  const w = pairs.split(' ');
  return w.filter((_, i) => i % 2 == 0).map((from, i) => [new RegExp(`\\b${from}\\b`, 'g'), w[2 * i + 1]]);
};
const whole = /^[\s\S]*$/;

export const PATCHES = {
  // The agent sends one beacon per page view and does not report back/forward
  // cache restores (the view was sent when the page was hidden): never restored.
  'lib/bfcache.js': [
    [whole, 'export const getBFCacheRestoreTime = () => -1; export const onBFCacheRestore = () => {};'],
  ],
  // No `rating` and no `delta`: the collector rates values itself. The agent
  // always passes `reportAllChanges`, so every change is reported.
  'lib/bindReporter.js': [
    [
      whole,
      `export const bindReporter = (callback, metric) => {
        let prevValue;
        return () => {
          if (metric.value >= 0 && metric.value !== prevValue) {
            prevValue = metric.value;
            callback(metric);
          }
        };
      };`,
    ],
  ],
  'lib/initMetric.js': [
    [/rating: 'good',.*\n\s*delta: 0,/, ''],
    ['id: generateUniqueID(),', ''], // the agent's page-view id is its own
  ],
  // One manager per options object; each attribution function and its
  // unattributed twin share the options object, and the agent passes a fresh
  // one to each function (which is why the `Object.assign({}, opts)` clones
  // below can go).
  'lib/initUnique.js': [
    [whole, 'export const initUnique = (opts, ClassObj) => (opts._instance ||= new ClassObj());'],
  ],
  'onINP.js': [['opts.durationThreshold ?? DEFAULT_DURATION_THRESHOLD', 'DEFAULT_DURATION_THRESHOLD']],
  'onLCP.js': [[/if \(!opts.reportAllChanges\) \{\s*entries = entries.slice\(-1\);\s*\}/, '']],

  'attribution/onLCP.js': [
    ['opts = Object.assign({}, opts);', ''],
    ['opts.generateTarget?.(node) ?? ', ''],
    ['if (metric.entries.length) {', '{'], // LCP is only reported with an entry
    ['attribution.target = ', 'attribution.element = '],
    ['attribution.url = lcpEntry.url;', 'attribution.url = lcpEntry.url.slice(0, 1000);'],
    ['attribution.lcpEntry = lcpEntry;', ''],
    [/if \(lcpResourceEntry\) \{\s*attribution.lcpResourceEntry = lcpResourceEntry;\s*\}/, ''],
    [/,\s*navigationEntry,\s*\}/, '}'],
    [/Object\.assign\(metric, \{ attribution \}\)/, '(metric.attribution = attribution, metric)'],
    ...rename(
      'timeToFirstByte ttfb_ms resourceLoadDelay load_delay_ms resourceLoadDuration load_duration_ms elementRenderDelay render_delay_ms',
    ),
  ],

  'attribution/onINP.js': [
    ['opts = Object.assign({}, opts);', ''],
    ['opts.generateTarget?.(node) ?? ', ''],
    // `targetSelector` is not exposed by Chromium (156) or any other engine yet.
    [/else \{\s*const selector = interaction.entries.find[\s\S]*?\n            \}\n/, ''],
    // Groups keep only what the subparts and the LoAF clean-up read.
    ['group.processingStart = Math.min(entry.processingStart, group.processingStart);', ''],
    [/if \(opts.includeProcessedEventEntries !== false\) \{\s*group.entries.push\(entry\);\s*\}/, ''],
    [/processingStart: entry.processingStart,\s*/, ''],
    [/entries: opts.includeProcessedEventEntries !== false \? \[entry\] : \[\],/, ''],
    [/const processedEventEntries = [\s\S]*?\}\);\n/, ''],
    // Of the LoAF breakdown only the longest script goes on the wire: the same
    // loop over the intersecting frames' scripts, without the totals.
    [
      /const attributeLoAFDetails = [\s\S]*?\n    };\n/,
      `const attributeLoAFDetails = (attribution, interactionTime, longAnimationFrameEntries) => {
        let longestScriptDuration = 0;
        for (const loafEntry of longAnimationFrameEntries) {
            for (const script of loafEntry.scripts) {
                const scriptEndTime = script.startTime + script.duration;
                if (scriptEndTime < interactionTime) {
                    continue;
                }
                const intersectingScriptDuration = scriptEndTime - Math.max(interactionTime, script.startTime);
                if (intersectingScriptDuration > longestScriptDuration) {
                    attribution.script = String(script.sourceURL || script.invoker).slice(0, 1000);
                    attribution.script_ms = longestScriptDuration = intersectingScriptDuration;
                }
            }
        }
    };
`,
    ],
    [/interactionTime: firstEntry.startTime,\s*nextPaintTime: nextPaintTime,\s*processedEventEntries: processedEventEntries,\s*longAnimationFrameEntries: longAnimationFrameEntries,/, ''],
    [/loadState: [\s\S]*?totalUnattributedDuration: undefined,/, ''],
    ['attributeLoAFDetails(attribution);', 'attributeLoAFDetails(attribution, firstEntry.startTime, longAnimationFrameEntries);'],
    [/Object\.assign\(metric, \{ attribution \}\)/, '(metric.attribution = attribution, metric)'],
    ...rename(
      'interactionTarget target interactionType type inputDelay input_delay_ms processingDuration processing_ms presentationDelay presentation_delay_ms',
    ),
  ],

  'attribution/onCLS.js': [
    ['opts = Object.assign({}, opts);', ''],
    ['opts.generateTarget?.(node) ?? ', ''],
    [/largestShiftSource: [\s\S]*?loadState: getLoadState\(largestEntry.startTime\),/, ''],
    [/Object\.assign\(metric, \{ attribution \}\)/, '(metric.attribution = attribution, metric)'],
    ...rename('largestShiftTarget target largestShiftTime time_ms largestShiftValue value'),
  ],

  'attribution/onFCP.js': [
    [/,\s*loadState: getLoadState\(getBFCacheRestoreTime\(\)\),/, ','],
    ['if (metric.entries.length) {', '{'], // FCP is only reported with its entry
    ['const fcpEntry = metric.entries.at(-1);', ''],
    [/,\s*loadState: getLoadState\(metric.entries\[0\].startTime\),\s*navigationEntry,\s*fcpEntry,/, ','],
    [/Object\.assign\(metric, \{ attribution \}\)/, '(metric.attribution = attribution, metric)'],
    ...rename('timeToFirstByte ttfb_ms firstByteToFCP first_byte_to_fcp_ms'),
  ],

  'attribution/onTTFB.js': [
    // TTFB is only reported with the navigation entry: no zero default.
    [/let attribution = \{[\s\S]*?\};\s*if \(metric.entries.length\) \{/, 'let attribution;\n    {'],
    [/,\s*navigationEntry: navigationEntry,/, ','],
    [/Object\.assign\(metric, \{ attribution \}\)/, '(metric.attribution = attribution, metric)'],
    ...rename(
      'waitingDuration waiting_ms cacheDuration cache_ms dnsDuration dns_ms connectionDuration connection_ms requestDuration request_ms',
    ),
  ],
};

/** Comments out, so the edits above match code only. */
const stripComments = (src) => src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*\n/gm, '');

/** Apply `PATCHES[file]` to `src` (a web-vitals module), failing loudly on a miss. */
export const patch = (file, src) => {
  src = stripComments(src);
  for (const [from, to] of PATCHES[file] || []) {
    const n = typeof from == 'string' ? src.split(from).length - 1 : (src.match(new RegExp(from, 'g')) || []).length;
    if (from.global ? n < 1 : n != 1) throw new Error(`web-vitals ${file}: edit matched ${n} times: ${from}`);
    src = src.replace(from, to);
  }
  return src;
};
