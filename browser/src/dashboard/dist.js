/**
 * Distribution bars: `<div class="dist">` holds `.good`, `.ni` and `.poor`
 * segments, each as wide as its share (the server sets `width:NN%`) and
 * labelled with it. A segment too narrow for its label gets the class
 * `narrow`, which hides the label rather than showing half of it.
 */
export const fitDist = (root) => {
  for (const seg of root.querySelectorAll('.dist > *')) {
    seg.classList.remove('narrow');
    seg.classList.toggle('narrow', seg.scrollWidth > seg.clientWidth);
  }
};
