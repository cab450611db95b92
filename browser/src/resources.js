/**
 * Resource timing, summed per type, plus the largest few resources one by one.
 *
 * The type comes from the initiator for fetch/XHR/beacon and otherwise from the
 * response's MIME type (`contentType`, same-origin/CORS only) or, failing that,
 * the URL's extension — `initiatorType` alone cannot tell a font from a
 * background image (both are `css`).
 */
import {bytes, clip} from './guard.js';

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
    const r = {
      url: clip(e.name),
      type: kind(e),
      transfer_bytes: bytes(e.transferSize),
      encoded_bytes: bytes(e.encodedBodySize),
      decoded_bytes: bytes(e.decodedBodySize),
      duration_ms: e.duration,
      cached: !e.transferSize && e.decodedBodySize > 0,
      render_blocking: e.renderBlockingStatus == 'blocking',
      third_party: !e.name.startsWith(origin + '/'),
    };
    // A group sums every numeric or boolean field of its entries.
    const g = (groups[r.type] ||= {type: r.type, count: 0});
    g.count++;
    for (const k in r) {
      const to = k == 'cached' ? 'cache_hits' : k;
      if (k != 'url' && k != 'type') g[to] = (g[to] || 0) + r[k];
    }
    return r;
  });
  return {
    resources: Object.values(groups),
    largest_resources: one.sort((a, b) => b.encoded_bytes - a.encoded_bytes).slice(0, 5),
  };
};
