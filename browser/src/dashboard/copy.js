/**
 * Copy buttons: `<button class="copy" data-copy-target="#snippet">Copy</button>`
 * puts the target's text on the clipboard and reads "Copied" for two seconds.
 */
const SHOWN_MS = 2000;

/** The Clipboard API where the page is a secure context, else the old selection route. */
const write = async (text, target) => {
  if (navigator.clipboard?.writeText) return navigator.clipboard.writeText(text);
  const range = document.createRange();
  range.selectNodeContents(target);
  const sel = getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
  const ok = document.execCommand('copy');
  sel.removeAllRanges();
  if (!ok) throw new Error('copy refused');
};

const flash = (button, label) => {
  button.dataset.label ??= button.textContent;
  button.textContent = label;
  clearTimeout(button._timer);
  button._timer = setTimeout(() => (button.textContent = button.dataset.label), SHOWN_MS);
};

export const watchCopy = () =>
  document.addEventListener('click', (e) => {
    const button = e.target.closest?.('button.copy[data-copy-target]');
    if (!button) return;
    let target = null;
    try {
      target = document.querySelector(button.dataset.copyTarget);
    } catch {
      // not a selector: nothing to copy
    }
    if (!target) return;
    write(target.textContent, target).then(
      () => flash(button, 'Copied'),
      () => flash(button, 'Copy failed'),
    );
  });
