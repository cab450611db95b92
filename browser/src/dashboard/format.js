/**
 * Number formatting by unit, for chart axes, legends and tooltips:
 *
 *     formatter('ms')(1234)      // '1.23 s'
 *     formatter('bytes')(20480)  // '20 KB'
 *     formatter('ratio')(0.25)   // '25%'
 *
 * Units are the catalog's: ms, s, bytes, 1, percent, ratio, req/s. Any other
 * unit is printed after the number as it is.
 */

/** At most three significant digits, no trailing zeros: 0.123, 1.23, 12.3, 123, 1234. */
export const num = (v) => {
  const a = Math.abs(v);
  const digits = a >= 100 || a == 0 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return String(+v.toFixed(digits));
};

/** 1234 → '1.23k', 5600000 → '5.6M'. */
export const compact = (v) => {
  const a = Math.abs(v);
  if (a >= 1e9) return num(v / 1e9) + 'G';
  if (a >= 1e6) return num(v / 1e6) + 'M';
  if (a >= 1e4) return num(v / 1e3) + 'k';
  return num(v);
};

const BYTES = ['B', 'KB', 'MB', 'GB', 'TB'];

const bytes = (v) => {
  let i = 0;
  while (Math.abs(v) >= 1024 && i < BYTES.length - 1) {
    v /= 1024;
    i++;
  }
  return num(v) + ' ' + BYTES[i];
};

const ms = (v) => (Math.abs(v) >= 1000 ? num(v / 1000) + ' s' : num(v) + ' ms');

const UNITS = {
  ms,
  s: (v) => (v != 0 && Math.abs(v) < 1 ? ms(v * 1000) : num(v) + ' s'),
  bytes,
  1: compact,
  percent: (v) => num(v) + '%',
  ratio: (v) => num(v * 100) + '%',
  'req/s': (v) => compact(v) + ' req/s',
};

/** A function formatting a value of `unit`; null and non-numbers print as '–'. */
export const formatter = (unit) => {
  const f = UNITS[unit] || (unit ? (v) => compact(v) + ' ' + unit : compact);
  return (v) => (typeof v == 'number' && isFinite(v) ? f(v) : '–');
};
