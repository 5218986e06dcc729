// What the dashboard's markup would otherwise do inline, which its Content-Security-Policy
// (script-src 'self'; style-src 'self', htportal/middleware.py) forbids:
// - a bar segment's width comes from its data-width ("12.345%"), set through the DOM (allowed,
//   unlike a style="" attribute), on load and after every htmx swap;
// - a form with data-confirm asks before it submits.
(function () {
  "use strict";

  function applyWidths(root) {
    var nodes = (root || document).querySelectorAll("[data-width]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].style.width = nodes[i].getAttribute("data-width");
    }
  }

  document.addEventListener("DOMContentLoaded", function () { applyWidths(document); });
  document.addEventListener("htmx:afterSettle", function (event) { applyWidths(event.target); });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
