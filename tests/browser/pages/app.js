// The shop page's own code: a layout shift once the hero image is in, a slow
// click handler, and one cacheable resource fetched twice (the second time it
// comes from the HTTP cache).
function busy(ms) {
  var end = performance.now() + ms;
  while (performance.now() < end) {}
}
document.getElementById('buy').addEventListener('click', function () {
  busy(150);
  this.textContent = 'Added';
});
addEventListener('load', function () {
  setTimeout(function () {
    document.getElementById('slot').style.height = '120px';
    __truth.marks.shifted = performance.now();
  }, 100);
  var url = '/asset/data.json?bytes=7000&cache=1';
  fetch(url)
    .then(function (r) { return r.text(); })
    .then(function () { return fetch(url); })
    .then(function (r) { return r.text(); })
    .then(function () { __truth.marks.fetched = performance.now(); });
});
