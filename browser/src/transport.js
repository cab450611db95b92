/**
 * One POST per page view: `navigator.sendBeacon` (text/plain, survives the page
 * going away), else `fetch` with `keepalive`. Neither sets a cookie: the beacon
 * is credential-free by the collector's CORS policy and carries no identifier.
 */
export const send = (url, body) => {
  try {
    if (navigator.sendBeacon(url, body)) return;
  } catch {
    // Fall through to fetch.
  }
  fetch(url, {method: 'POST', body, keepalive: true, credentials: 'omit'}).catch(() => {});
};
