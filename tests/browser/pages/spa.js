// A single-page app: "Cart" changes the route with history.pushState, renders,
// blocks the main thread for 80 ms and loads the cart; 700 ms later the new view
// shifts. "Checkout" on the new route has a 120 ms handler.
function busy(ms) {
  var end = performance.now() + ms;
  while (performance.now() < end) {}
}
document.getElementById('go').addEventListener('click', function () {
  __truth.marks.beforeRoute = performance.now();
  history.pushState({}, '', '/spa/cart');
  __truth.marks.route = performance.now();
  requestAnimationFrame(function () {
    setTimeout(function () {
      __truth.marks.painted = performance.now();
    });
  });
  document.querySelector('#view h1').textContent = 'Cart';
  document.getElementById('checkout').hidden = false;
  busy(80);
  fetch('/asset/cart.json?bytes=5000')
    .then(function (r) { return r.text(); })
    .then(function () { __truth.marks.cart = performance.now(); });
  setTimeout(function () {
    document.getElementById('slot').style.height = '80px';
    __truth.marks.shifted = performance.now();
  }, 700);
});
document.getElementById('checkout').addEventListener('click', function () {
  busy(120);
});
