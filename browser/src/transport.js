/**
 * One POST per page view: `navigator.sendBeacon` (text/plain, survives the page
 * going away), else — when it is missing, throws or refuses — `fetch` with
 * `keepalive`. The agent sets no cookie and the beacon carries no identifier.
 */
import {guard} from './guard.js';

export const send = (url, body) =>
  guard(() => navigator.sendBeacon(url, body))() ||
  fetch(url, {method: 'POST', body, keepalive: true}).catch(() => {});
