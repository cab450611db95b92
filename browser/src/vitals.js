/**
 * Core Web Vitals from Google's web-vitals (attribution build) for the hard
 * page view. FID, which web-vitals v5 dropped, comes straight from the
 * `first-input` entry (index.js).
 *
 * The build edits web-vitals so that `metric.attribution` already carries the
 * wire format's keys (`ttfb_ms`, `load_delay_ms`, `script`…) and nothing else:
 * see browser/patches.mjs. `report(metric)` is called on every change
 * (`reportAllChanges`), so the latest value is at hand when the view is sent.
 */
import {onCLS} from 'web-vitals/attribution/onCLS.js';
import {onFCP} from 'web-vitals/attribution/onFCP.js';
import {onINP} from 'web-vitals/attribution/onINP.js';
import {onLCP} from 'web-vitals/attribution/onLCP.js';
import {onTTFB} from 'web-vitals/attribution/onTTFB.js';
import {guard} from './guard.js';

export const watchVitals = (report) => {
  // A fresh options object per function: the patched web-vitals keeps each
  // function's manager (INP interactions, CLS session…) on it.
  for (const on of [onLCP, onINP, onCLS, onFCP, onTTFB]) on(guard(report), {reportAllChanges: true});
};
