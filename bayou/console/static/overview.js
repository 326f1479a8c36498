// The overview's live charts: one point a second from /console/live (Server-Sent Events),
// one line per door, the last two minutes kept.
(function () {
  "use strict";
  const DOORS = ["kafka", "http", "mqtt", "amqp"];
  const COLORS = {kafka: "#1f77b4", http: "#ff7f0e", mqtt: "#2ca02c", amqp: "#d62728"};
  const METRICS = ["messages_in", "bytes_in", "messages_out", "bytes_out", "connections"];
  const KEEP = 120;
  const live = {ticks: 0, last: null, data: {}, charts: {}};
  window.consoleLive = live;

  function width(el) {
    return Math.max(200, el.clientWidth || 320);
  }

  for (const metric of METRICS) {
    const el = document.getElementById("chart-" + metric);
    const data = [[]].concat(DOORS.map(() => []));
    const opts = {
      width: width(el),
      height: 180,
      series: [{}].concat(DOORS.map((d) => ({label: d, stroke: COLORS[d], width: 2}))),
      axes: [{}, {size: 60}],
      legend: {live: false},
    };
    live.data[metric] = data;
    live.charts[metric] = new uPlot(opts, data, el);
  }

  window.addEventListener("resize", () => {
    for (const metric of METRICS) {
      const el = document.getElementById("chart-" + metric);
      live.charts[metric].setSize({width: width(el), height: 180});
    }
  });

  function human(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }

  function text(tag, value) {
    const el = document.createElement(tag);
    el.textContent = value;
    return el;
  }

  function showGroups(groups) {
    const body = document.getElementById("groups");
    body.replaceChildren();
    if (!groups.length) {
      const row = document.createElement("tr");
      const cell = text("td", "No consumer groups.");
      cell.colSpan = 3;
      row.append(cell);
      body.append(row);
      return;
    }
    for (const g of groups) {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      const link = text("a", g.group);
      link.href = "/console/groups/" + encodeURIComponent(g.group);
      name.append(link);
      row.append(name, text("td", g.members), text("td", g.lag));
      body.append(row);
    }
  }

  const status = document.getElementById("live-status");
  const source = new EventSource("/console/live");
  source.onopen = () => { status.textContent = "Live: updated every second."; };
  source.onerror = () => { status.textContent = "Live stream interrupted; reconnecting…"; };
  source.onmessage = (event) => {
    const now = JSON.parse(event.data);
    live.ticks += 1;
    live.last = now;
    for (const metric of METRICS) {
      const data = live.data[metric];
      data[0].push(now.time);
      DOORS.forEach((d, i) => data[i + 1].push(now.doors[d] ? now.doors[d][metric] : null));
      if (data[0].length > KEEP) data.forEach((s) => s.shift());
      live.charts[metric].setData(data);
    }
    document.getElementById("stat-topics").textContent = now.topics;
    document.getElementById("stat-partitions").textContent = now.partitions;
    document.getElementById("stat-bytes").textContent = human(now.bytes);
    for (const cell of document.querySelectorAll("[data-door]")) {
      const door = now.doors[cell.dataset.door];
      if (door) cell.textContent = door.connections;
    }
    showGroups(now.groups);
  };
})();
