// The message browser's live tail: new records (filtered and decoded by the broker) added on
// top of the table as they land, until stopped or the page is left.
(function () {
  "use strict";
  const KEEP = 500;
  const button = document.getElementById("tail");
  const status = document.getElementById("tail-status");
  const body = document.getElementById("messages");
  const form = document.getElementById("browse");
  let source = null;
  window.consoleTail = {rows: 0, open: false};

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function named(name, text, cls) {
    const div = document.createElement("div");
    if (cls) div.className = cls;
    const strong = document.createElement("strong");
    strong.textContent = name;
    div.append(strong, ": " + text);
    return div;
  }

  function row(r) {
    const tr = document.createElement("tr");
    tr.className = "message tailed";
    tr.dataset.partition = r.partition;
    tr.dataset.offset = r.offset;
    const value = document.createElement("td");
    const pre = document.createElement("pre");
    pre.className = "value";
    pre.dataset.kind = r.value.kind;
    pre.textContent = r.value.text;
    value.append(pre);
    const headers = document.createElement("td");
    for (const p of r.protocols) {  // MQTT or AMQP properties, by name
      headers.append(named(p.protocol, p.items.join(", "), "protocol"));
      headers.lastChild.dataset.protocol = p.protocol;
    }
    let stored = headers;
    if (r.protocols.length) {
      stored = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "Stored as " + r.headers.length + " header(s)";
      stored.append(summary);
      headers.append(stored);
    }
    for (const [name, v] of r.headers) stored.append(named(name, v.text));
    const again = document.createElement("td");
    const link = document.createElement("a");
    link.href = body.dataset.url + "/produce?partition=" + r.partition + "&offset=" + r.offset;
    link.textContent = "Re-produce";
    again.append(link);
    tr.append(cell(r.partition, "partition"), cell(r.offset, "offset"), cell(r.time),
              cell(r.key.text, "key"), value, headers, again);
    return tr;
  }

  function stop() {
    if (source) source.close();
    source = null;
    window.consoleTail.open = false;
    button.textContent = "Live tail";
    button.setAttribute("aria-pressed", "false");
    status.textContent = "Live tail stopped.";
  }

  function start() {
    const params = new URLSearchParams();
    for (const name of ["partition", "filter", "decode"]) params.set(name, form.elements[name].value);
    source = new EventSource(button.dataset.tail + "?" + params.toString());
    button.textContent = "Stop live tail";
    button.setAttribute("aria-pressed", "true");
    status.textContent = "Live tail: waiting for new messages…";
    source.onopen = () => { window.consoleTail.open = true; };
    source.onerror = () => { status.textContent = "Live tail interrupted; reconnecting…"; };
    source.onmessage = (event) => {
      const rows = JSON.parse(event.data);
      for (const r of rows) {
        const empty = body.querySelector("tr:not(.message)");
        if (empty) empty.remove();
        body.prepend(row(r));
        window.consoleTail.rows += 1;
      }
      while (body.children.length > KEEP) body.lastElementChild.remove();
      status.textContent = "Live tail: " + window.consoleTail.rows + " new message(s).";
    };
  }

  button.addEventListener("click", () => (source ? stop() : start()));
})();
