// Keyboard-first review. Every key clicks or fills the same controls a mouse
// user has (buttons, radios, the edit box), so keys and buttons cannot drift
// apart, and without JavaScript the forms still work on their own.
(function () {
  "use strict";
  var rejecting = false;
  // Between sending an action and htmx finishing the swap of the next card,
  // keys are ignored: a decision must follow seeing its card, and a form that
  // htmx has not wired up yet would fall back to a full page submit.
  var busy = false;

  function card() { return document.getElementById("review-card"); }
  function q(selector) { var c = card(); return c ? c.querySelector(selector) : null; }

  function setRejecting(on) {
    rejecting = on;
    var reasons = q("#reject-reasons");
    if (reasons) reasons.classList.toggle("picking", on);
  }

  function submit(form) {
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  }

  document.addEventListener("keydown", function (event) {
    if (busy) { event.preventDefault(); return; }
    if (event.ctrlKey && event.key === "Enter" && event.target.form && event.target.tagName === "TEXTAREA") {
      event.preventDefault();
      submit(event.target.form);
      return;
    }
    if (event.key === "Escape") {
      setRejecting(false);
      var edit = q("#edit-panel");
      if (edit) edit.open = false;
      if (document.activeElement) document.activeElement.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) {
      if (target.classList.contains("reason-text") && event.key === "Enter") {
        event.preventDefault();
        submit(target.form);
      }
      return;
    }
    if (rejecting && /^[1-9]$/.test(event.key)) {
      var radio = q('input[data-reason-key="' + event.key + '"]');
      if (!radio) return;
      event.preventDefault();
      radio.checked = true;
      if (radio.hasAttribute("data-other")) {
        q(".reason-text").focus();
      } else {
        setRejecting(false);
        submit(radio.form);
      }
      return;
    }
    var button;
    switch (event.key) {
      case "x":
        event.preventDefault();
        setRejecting(!rejecting);
        return;
      case "e":
        var panel = q("#edit-panel");
        if (!panel) return;
        event.preventDefault();
        panel.open = true;
        panel.querySelector("textarea").focus();
        return;
      case "?":
        var help = document.getElementById("review-help");
        if (help) { event.preventDefault(); help.open = !help.open; }
        return;
      default:
        button = q('button[data-key="' + event.key + '"]');
    }
    if (!button || button.disabled) return;
    event.preventDefault();
    button.click();
  });

  function markReady() {
    var c = card();
    if (c) c.dataset.ready = "1";
    busy = false;
    setRejecting(false);
  }

  // One action per card: disable its buttons while a request is in flight.
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var c = card();
    if (c && c.contains(event.target)) {
      busy = true;
      delete c.dataset.ready;
      c.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.failed) {  // nothing was swapped: give the card back to the reviewer
      var c = card();
      if (c) c.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      markReady();
    }
  });
  // htmx calls this once it has processed new content, the first page included.
  htmx.onLoad(function (elt) {
    if (elt.id === "review-card" || (elt.querySelector && elt.querySelector("#review-card"))) markReady();
  });
})();
