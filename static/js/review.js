// Keyboard shortcuts for the review queue: each key clicks the button that
// carries it (data-key), so keys and buttons can never do different things.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
    var button = document.querySelector('#review-card button[data-key="' + event.key + '"]');
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });
  // One decision per card: disable the buttons while a request is in flight.
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var card = document.getElementById("review-card");
    if (card && card.contains(event.target)) {
      card.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }
  });
})();
