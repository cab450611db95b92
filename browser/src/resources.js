/**
 * Resource timing, summed per type, plus the largest few resources one by one.
 *
 * The type comes from the initiator for fetch/XHR/beacon and otherwise from the
 * response's MIME type (`contentType`, same-origin/CORS only) or, failing that,
 * the URL's extension — `initiatorType` alone cannot tell a font from a
 * background image (both are `css`).
 */
import {clip} from './guard.js';

const kind = (e, i = e.initiatorType, by = e.contentType || e.name.split(/[?#]/)[0]) =>
  /^(fetch|xmlhttprequest|beacon)$/.test(i)
    ? 'fetch'
    : /font|woff2?$|[ot]tf$/.test(by)
      ? 'font'
      : i == 'img' || /image|\.(png|jpe?g|gif|webp|avif|svg|ico)$/.test(by)
        ? 'image'
        : /css/.test(by)
          ? 'stylesheet'
          : i == 'script' || /script|\.m?js$/.test(by)
            ? 'script'
            : 'other';

/** Resource entries → `{resources, largest_resources}` in wire format. */
export const summarize = (entries, origin) => {
  const groups = {};
  const one = entries.map((e) => {
    const type = kind(e);
    // Byte counts are integers, or missing where the browser has none.
    const r = {
      transfer_bytes: e.transferSize || 0,
      encoded_bytes: e.encodedBodySize || 0,
      decoded_bytes: e.decodedBodySize || 0,
      duration_ms: e.duration,
      cached: !e.transferSize && e.decodedBodySize > 0,
      render_blocking: e.renderBlockingStatus == 'blocking',
      third_party: !e.name.startsWith(origin + '/'),
    };
    // A group sums every field of its entries (booleans count).
    const g = (groups[type] ||= {type, count: 0});
    g.count++;
    for (const k in r) {
      const to = k == 'cached' ? 'cache_hits' : k;
      g[to] = (g[to] || 0) + r[k];
    }
    return {url: clip(e.name), type, ...r};
  });
  return {
    resources: Object.values(groups),
    largest_resources: one.sort((a, b) => b.encoded_bytes - a.encoded_bytes).slice(0, 5),
  };
};
