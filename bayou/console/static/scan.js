// A running scan of the message browser: the broker streams the page, with a line of
// progress every quarter second until the results; "Cancel scan" asks the broker to stop it.
(function () {
  "use strict";
  const section = document.getElementById("scan-progress");
  const bar = document.getElementById("scan-bar");
  const status = document.getElementById("scan-status");
  const cancel = document.getElementById("scan-cancel");
  const state = {updates: [], finished: false, cancelling: false};

  state.progress = function (p) {
    state.updates.push(p);
    section.hidden = false;
    bar.max = Math.max(1, p.total);
    bar.value = p.done;
    status.textContent = p.text;
  };

  state.done = function () {
    state.finished = true;
    section.hidden = true;
    cancel.disabled = true;
  };

  cancel.addEventListener("click", () => {
    if (state.finished || state.cancelling) return;
    state.cancelling = true;
    cancel.disabled = true;
    status.textContent = "Cancelling…";
    fetch(cancel.dataset.cancel, {method: "POST"}).then((response) => {
      if (!response.ok && !state.finished) status.textContent = "The scan had already ended.";
    });
  });

  window.consoleScan = state;
})();
