/**
 * Live refresh. `<main id="content" data-refresh="30">` refreshes every 30 s
 * while the `#live` checkbox is checked and the page is visible: it fetches
 * the page's own URL with `X-Perfpulse-Partial: 1`, to which the server answers
 * with main's new inner HTML, and swaps it in. `data-refreshed` on main counts
 * the swaps. A network or server error keeps the old content until the next
 * tick; 401 or 403 (the session ended) stops refreshing and offers the way to
 * log in again. The checkbox remembers its state in localStorage.
 */
const STORE = 'perfpulse.live';
const PARTIAL = {'X-Perfpulse-Partial': '1'};

const stored = () => {
  try {
    return localStorage.getItem(STORE);
  } catch {
    return null; // storage disabled
  }
};

const store = (on) => {
  try {
    localStorage.setItem(STORE, on ? '1' : '0');
  } catch {
    // storage disabled: the choice lasts for this page only
  }
};

const expired = (main) => {
  if (document.getElementById('session-expired')) return;
  const banner = document.createElement('p');
  banner.id = 'session-expired';
  banner.className = 'error';
  banner.setAttribute('role', 'alert');
  const link = document.createElement('a');
  link.href = '/login';
  link.textContent = 'Session expired — log in again';
  banner.append(link);
  main.prepend(banner);
};

/**
 * Start refreshing. `swap(main, html)` replaces main's content and
 * re-initialises it (charts, sparklines, tables).
 */
export const startLive = (swap) => {
  const main = document.getElementById('content');
  const box = document.getElementById('live');
  if (!main || !box) return;
  const remembered = stored();
  if (remembered != null && !box.disabled) box.checked = remembered == '1';
  const every = (parseFloat(main.dataset.refresh) || 0) * 1000;
  let timer = 0;
  let last = Date.now();
  let busy = false;
  let stopped = false;
  let count = 0;

  const schedule = () => {
    clearTimeout(timer);
    if (every > 0 && box.checked && !stopped) timer = setTimeout(tick, every);
  };

  const tick = async () => {
    clearTimeout(timer);
    if (busy || stopped || !box.checked) return;
    if (document.visibilityState != 'visible') return schedule();
    busy = true;
    try {
      const res = await fetch(location.href, {headers: PARTIAL, credentials: 'same-origin', cache: 'no-store'});
      if (res.status == 401 || res.status == 403 || (res.redirected && new URL(res.url).pathname == '/login')) {
        stopped = true;
        box.checked = false;
        box.disabled = true;
        return expired(main);
      }
      if (!res.ok) return;
      const html = await res.text();
      if (!box.checked || stopped) return;
      swap(main, html);
      main.dataset.refreshed = String(++count);
    } catch {
      // offline or the server is restarting: keep what is shown, try next tick
    } finally {
      busy = false;
      last = Date.now();
      schedule();
    }
  };

  box.addEventListener('change', () => {
    store(box.checked);
    schedule();
  });
  // Back from a background tab after a tick was skipped: refresh now.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState == 'visible' && every > 0 && Date.now() - last >= every) tick();
  });
  schedule();
};
