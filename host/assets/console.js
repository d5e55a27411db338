// wasaga console: the overview's charts (uPlot), fed from /ui/series.json every 2 s.
"use strict";

(function () {
  const charts = {
    completed: { series: [["orders/s", "completed_per_s", "#2456c9"]] },
    latency: { series: [["p50 ms", "p50_ms", "#1d7a45"], ["p99 ms", "p99_ms", "#b42318"]] },
    dead_letters: { series: [["dead letters", "dead_letters", "#9a6700"]] },
    outbox_lag: { series: [["lag s", "outbox_lag_s", "#6941c6"]] },
  };
  // Exposed for the browser tests: each chart and the data it shows.
  window.wasagaCharts = {};

  function build(figure) {
    const spec = charts[figure.dataset.chart];
    if (!spec) return null;
    const width = () => Math.max(280, figure.clientWidth - 16);
    const plot = new uPlot({
      width: width(),
      height: 220,
      scales: { x: { time: true } },
      series: [{}].concat(spec.series.map(([label, , stroke]) => ({ label, stroke, width: 2, spanGaps: false }))),
      axes: [{}, { size: 60 }],
    }, [[]].concat(spec.series.map(() => [])), figure);
    window.addEventListener("resize", () => plot.setSize({ width: width(), height: 220 }));
    return { plot, spec };
  }

  function start() {
    const figures = document.querySelectorAll("figure.chart[data-chart]");
    if (figures.length === 0 || typeof uPlot === "undefined") return;
    const built = [];
    figures.forEach((figure) => {
      const chart = build(figure);
      if (chart) {
        built.push(chart);
        window.wasagaCharts[figure.dataset.chart] = chart.plot;
      }
    });
    async function refresh() {
      try {
        const response = await fetch("/ui/series.json", { credentials: "same-origin" });
        if (!response.ok) return;
        const data = await response.json();
        for (const { plot, spec } of built) {
          plot.setData([data.t].concat(spec.series.map(([, key]) => data[key])));
        }
      } catch (_) {
        // The next tick tries again.
      }
    }
    refresh();
    setInterval(refresh, 2000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
