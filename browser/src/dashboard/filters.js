/**
 * The filter bar, `<form id="filters" method="get">`, keeps the view in the URL:
 *
 * - changing any select in it submits it at once;
 * - choosing range "custom" instead reveals `#custom-range` (its `from`/`to`
 *   inputs) and waits for the form's own submit button;
 * - fields that are empty, or inside a hidden element, stay out of the URL.
 */
const CUSTOM = 'custom';

const ours = (form) => form?.id == 'filters';

const showCustom = (custom) => {
  const range = document.getElementById('custom-range');
  if (range) range.hidden = !custom;
  return range;
};

/** Disable, for this submission only, the fields the URL should not carry. */
const prune = (form) => {
  const off = [...form.elements].filter(
    (f) => f.name && !f.disabled && !/^(submit|button|reset)$/.test(f.type) && (f.value === '' || f.closest('[hidden]')),
  );
  for (const f of off) f.disabled = true;
  // The form data set is taken as the submit event ends; give the fields back
  // afterwards so the page still works if the navigation is cancelled or undone.
  setTimeout(() => off.forEach((f) => (f.disabled = false)));
};

const submit = (form) => (form.requestSubmit ? form.requestSubmit() : (prune(form), form.submit()));

/** Show the custom range when the page opens on it; listen for changes and submissions. */
export const watchFilters = () => {
  const range = document.querySelector('#filters select[name="range"]');
  if (range) showCustom(range.value == CUSTOM);
  document.addEventListener('change', (e) => {
    const field = e.target;
    if (field.tagName != 'SELECT' || !ours(field.form)) return;
    if (field.name == 'range') {
      const box = showCustom(field.value == CUSTOM);
      if (field.value == CUSTOM) return box?.querySelector('input')?.focus();
    }
    submit(field.form);
  });
  document.addEventListener('submit', (e) => ours(e.target) && prune(e.target));
};
