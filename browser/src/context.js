/**
 * Who is looking: device class, browser family and effective connection type.
 * Coarse on purpose — no user identifier, no fingerprint, nothing stored.
 */
const ALIAS = {Edg: 'edge', OPR: 'opera', FxiOS: 'firefox', CriOS: 'chrome', SamsungBrowser: 'samsung'};

export const context = (nav = navigator, ua = nav.userAgent) => {
  // Brands that also say "Chrome/" or "Safari/" first, then the two engines.
  const b = (/(Edg|OPR|SamsungBrowser|Firefox|FxiOS|CriOS)\//.exec(ua) ||
    /(Chrome|Safari)\//.exec(ua) || [0, 'other'])[1];
  return {
    device: /iPad|Tablet|Android(?!.*Mobi)/.test(ua)
      ? 'tablet'
      : /Mobi|iPhone/.test(ua)
        ? 'mobile'
        : 'desktop',
    browser: ALIAS[b] || b.toLowerCase(),
    connection: nav.connection?.effectiveType || '',
  };
};
