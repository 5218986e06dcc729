// The campaign page's chart: done and failed tasks per minute, drawn with uPlot from the JSON
// that the series partial (refreshed by htmx every few seconds) puts in #series-data.
(function () {
  "use strict";
  var chart = null;

  function read() {
    var node = document.getElementById("series-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  function options(width) {
    return {
      width: width,
      height: 260,
      scales: { x: { time: true } },
      series: [
        {},
        { label: "done/min", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)", width: 2, points: { show: false } },
        { label: "failed/min", stroke: "#c62828", fill: "rgba(198,40,40,0.12)", width: 2, points: { show: false } }
      ],
      axes: [{}, { label: "tasks per minute" }]
    };
  }

  function draw() {
    var series = read();
    var box = document.getElementById("series-chart");
    if (!series || !box || typeof uPlot === "undefined") return;
    var data = [series.minutes, series.done, series.failed];
    if (chart) {
      chart.setData(data);
    } else {
      chart = new uPlot(options(box.clientWidth || 800), data, box);
      window.addEventListener("resize", function () {
        chart.setSize({ width: box.clientWidth, height: 260 });
      });
    }
    box.dataset.points = String(series.minutes.length);
  }

  document.addEventListener("DOMContentLoaded", draw);
  document.body.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "campaign-series") draw();
  });
})();
