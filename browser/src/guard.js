/**
 * The agent never throws into the page: every callback it hands to the browser
 * (observers, listeners, web-vitals reporters, the History API wrappers) goes
 * through `guard`, which swallows whatever the agent itself throws.
 *
 *     addEventListener('popstate', guard(route));
 */
export const guard =
  (fn) =>
  (...args) => {
    try {
      return fn(...args);
    } catch {
      // The page must never see an agent error.
    }
  };

/** Clip a string so no single value can push a beacon past its size limit. */
export const clip = (s, max = 1000) => s && (s + '').slice(0, max);
