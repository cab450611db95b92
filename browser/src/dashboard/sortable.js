/**
 * Sortable tables: in `<table class="sortable">`, a `<th data-sort="num">` or
 * `<th data-sort="text">` sorts the body rows by that column when clicked, or
 * on Enter or Space (the header is focusable). A cell sorts by its
 * `data-value` if it has one, else by its text; empty cells and "–" go last
 * in either direction. The header's `aria-sort` tells which way it sorted.
 */
const HEAD = 'table.sortable th[data-sort]';
const EMPTY = new Set(['', '–', '—', '-']);

const key = (cell, kind) => {
  if (!cell) return null;
  const raw = (cell.hasAttribute('data-value') ? cell.getAttribute('data-value') : cell.textContent).trim();
  if (EMPTY.has(raw)) return null;
  if (kind != 'num') return raw;
  const n = parseFloat(raw.replace(/[,\s]/g, ''));
  return isNaN(n) ? null : n;
};

const compare = (kind, sign) => (a, b) => {
  if (a[0] == null || b[0] == null) return (a[0] == null) - (b[0] == null);
  const d = kind == 'num' ? a[0] - b[0] : a[0].localeCompare(b[0], undefined, {numeric: true, sensitivity: 'base'});
  return sign * d;
};

/** Sort `th`'s table by its column, in `dir` or else the other way than last time. */
export const sortBy = (th, dir) => {
  const table = th.closest('table');
  const kind = th.dataset.sort;
  dir ||= th.getAttribute('aria-sort') == 'ascending' ? 'descending' : 'ascending';
  for (const body of table.tBodies) {
    const rows = [...body.rows].map((r) => [key(r.cells[th.cellIndex], kind), r]);
    rows.sort(compare(kind, dir == 'ascending' ? 1 : -1));
    body.append(...rows.map((r) => r[1]));
  }
  for (const other of table.querySelectorAll('th[aria-sort]')) other.removeAttribute('aria-sort');
  th.setAttribute('aria-sort', dir);
};

/** Make the sortable headers inside `root` focusable. */
export const initSortable = (root) => {
  for (const th of root.querySelectorAll(HEAD)) th.tabIndex = 0;
};

/** One set of listeners on the document serves every sortable table, old or new. */
export const watchSorting = () => {
  document.addEventListener('click', (e) => {
    const th = e.target.closest?.(HEAD);
    if (th) sortBy(th);
  });
  document.addEventListener('keydown', (e) => {
    const th = e.target.closest?.(HEAD);
    if (th && (e.key == 'Enter' || e.key == ' ') && e.target == th) {
      e.preventDefault();
      sortBy(th);
    }
  });
};

/** Which column each sortable table in `root` is sorted by, to sort it again after a refresh. */
export const sortState = (root) =>
  [...root.querySelectorAll('table.sortable')].map((table) => {
    const th = table.querySelector('th[data-sort][aria-sort]');
    return th && [table.id, th.cellIndex, th.getAttribute('aria-sort')];
  });

/** Re-apply a `sortState` to the tables now in `root`: matched by id, else by position. */
export const restoreSort = (root, state) => {
  const tables = [...root.querySelectorAll('table.sortable')];
  state.forEach((s, i) => {
    if (!s) return;
    const [id, col, dir] = s;
    const table = id ? root.querySelector(`table.sortable[id="${CSS.escape(id)}"]`) : tables[i];
    const th = [...(table?.querySelectorAll('th[data-sort]') || [])].find((h) => h.cellIndex == col);
    if (th) sortBy(th, dir);
  });
};
