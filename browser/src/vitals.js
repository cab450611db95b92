/**
 * Core Web Vitals from Google's web-vitals (attribution build), mapped to the
 * wire's compact attribution keys. FID, which web-vitals v5 dropped, comes
 * straight from the `first-input` entry.
 *
 * `report(name, value, attribution, navigationType)` is called on every change
 * (`reportAllChanges`), so the latest value is at hand when the view is sent.
 */
import {onCLS} from 'web-vitals/attribution/onCLS.js';
import {onFCP} from 'web-vitals/attribution/onFCP.js';
import {onINP} from 'web-vitals/attribution/onINP.js';
import {onLCP} from 'web-vitals/attribution/onLCP.js';
import {onTTFB} from 'web-vitals/attribution/onTTFB.js';
import {getSelector} from '#wv/getSelector.js';
import {clip, guard} from './guard.js';

const ATTRIBUTION = {
  LCP: (a) => ({
    element: a.target,
    url: clip(a.url),
    ttfb_ms: a.timeToFirstByte,
    load_delay_ms: a.resourceLoadDelay,
    load_duration_ms: a.resourceLoadDuration,
    render_delay_ms: a.elementRenderDelay,
  }),
  INP: (a, s = a.longestScript) => ({
    target: a.interactionTarget,
    type: a.interactionType,
    input_delay_ms: a.inputDelay,
    processing_ms: a.processingDuration,
    presentation_delay_ms: a.presentationDelay,
    script: clip(s && (s.entry.sourceURL || s.entry.invoker)),
    script_ms: s?.intersectingDuration,
  }),
  CLS: (a) => ({
    target: a.largestShiftTarget,
    time_ms: a.largestShiftTime,
    value: a.largestShiftValue,
  }),
  FCP: (a) => ({
    ttfb_ms: a.timeToFirstByte,
    first_byte_to_fcp_ms: a.firstByteToFCP,
  }),
  TTFB: (a) => ({
    waiting_ms: a.waitingDuration,
    cache_ms: a.cacheDuration,
    dns_ms: a.dnsDuration,
    connection_ms: a.connectionDuration,
    request_ms: a.requestDuration,
  }),
};

export const watchVitals = (report) => {
  const each = guard((m) =>
    report(m.name, m.value, ATTRIBUTION[m.name](m.attribution), m.navigationType),
  );
  const all = {reportAllChanges: true};
  for (const on of [onLCP, onINP, onCLS, onFCP, onTTFB]) on(each, all);
};

/** Legacy FID from the first input. */
export const firstInput = (e, report, type) =>
  report('FID', e.processingStart - e.startTime, {target: getSelector(e.target), type: e.name}, type);
