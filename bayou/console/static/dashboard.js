// A dashboard's live chart: one point a second from its SSE stream (the count of records and
// the mean of the field per line for that second); the last five minutes kept.
(function () {
  "use strict";
  const KEEP = 300;
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const el = document.getElementById("board-chart");
  const mode = el.dataset.mode;
  const windowS = Number(el.dataset.window);
  const board = {ticks: 0, times: [], count: [], lines: {}, names: [], chart: null};
  window.consoleBoard = board;

  function size() {
    return {width: Math.max(200, el.clientWidth || 320), height: 300};
  }

  function mean(values) {
    const seen = values.filter((v) => v !== null && v !== undefined);
    return seen.length ? seen.reduce((a, v) => a + v, 0) / seen.length : null;
  }

  function series() {
    // the plotted lines: the field's means per line, the count, or their moving average
    if (mode === "rate") return [["records/s", board.count]];
    return board.names.map((name) => {
      const raw = board.lines[name];
      if (mode !== "average") return [name, raw];
      return [name + " (avg " + windowS + " s)",
              raw.map((_, i) => mean(raw.slice(Math.max(0, i - windowS + 1), i + 1)))];
    });
  }

  function draw() {
    const lines = series();
    board.data = [board.times].concat(lines.map((l) => l[1]));
    const labels = lines.map((l) => l[0]).join("|");
    if (!board.chart || board.labels !== labels) {
      if (board.chart) board.chart.destroy();
      board.labels = labels;
      board.chart = new uPlot({
        ...size(),
        series: [{}].concat(lines.map((l, i) => ({label: l[0], stroke: COLORS[i % 10], width: 2,
                                                  spanGaps: true}))),
        axes: [{}, {size: 60}],
      }, board.data, el);
    } else {
      board.chart.setData(board.data);
    }
  }

  window.addEventListener("resize", () => { if (board.chart) board.chart.setSize(size()); });

  const status = document.getElementById("live-status");
  const source = new EventSource(el.dataset.live);
  source.onopen = () => { status.textContent = "Live: updated every second."; };
  source.onerror = () => { status.textContent = "Live stream interrupted; reconnecting…"; };
  source.onmessage = (event) => {
    const tick = JSON.parse(event.data);
    board.ticks += 1;
    for (const name of tick.lines) {
      if (!(name in board.lines)) {
        board.lines[name] = board.times.map(() => null);
        board.names.push(name);
      }
    }
    board.times.push(tick.time);
    board.count.push(tick.count);
    for (const name of board.names) board.lines[name].push(name in tick.means ? tick.means[name] : null);
    if (board.times.length > KEEP) {
      board.times.shift();
      board.count.shift();
      for (const key in board.lines) board.lines[key].shift();
    }
    draw();
  };
})();
