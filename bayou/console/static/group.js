// A consumer group's total lag over time: one point a second from its SSE stream.
(function () {
  "use strict";
  const KEEP = 600;
  const el = document.getElementById("lag-chart");
  const lag = {ticks: 0, data: [[], []], chart: null};
  window.consoleLag = lag;
  const size = () => ({width: Math.max(200, el.clientWidth || 320), height: 200});
  lag.chart = new uPlot({
    ...size(),
    series: [{}, {label: "lag", stroke: "#d62728", width: 2}],
    axes: [{}, {size: 60}],
  }, lag.data, el);
  window.addEventListener("resize", () => lag.chart.setSize(size()));
  const total = document.getElementById("group-lag");
  const source = new EventSource(el.dataset.live);
  source.onmessage = (event) => {
    const tick = JSON.parse(event.data);
    lag.ticks += 1;
    lag.data[0].push(tick.time);
    lag.data[1].push(tick.lag);
    if (lag.data[0].length > KEEP) lag.data.forEach((s) => s.shift());
    lag.chart.setData(lag.data);
    total.textContent = tick.lag;
  };
})();
