// The results pages: histograms (uPlot bars) from the JSON the results page puts in
// #histogram-data, the per-day core-hours chart from #accounting-data, and the record page's
// 3D view (3Dmol.js) of the XYZ text in #molecule-xyz. Everything is served by the portal.
(function () {
  "use strict";

  function json(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function histograms() {
    var list = json("histogram-data");
    if (!list || typeof uPlot === "undefined") return;
    list.forEach(function (h) {
      var box = document.getElementById("histogram-" + h.key);
      if (!box || !h.counts.length) return;
      var centers = [];
      for (var i = 0; i < h.counts.length; i++) centers.push((h.edges[i] + h.edges[i + 1]) / 2);
      if (centers.length === 1) centers = [h.edges[0]];
      new uPlot({
        width: box.clientWidth || 360, height: 180,
        scales: { x: { time: false } },
        legend: { show: false },
        series: [{ label: h.title }, {
          label: "records", stroke: "#1565c0", fill: "rgba(21,101,192,0.35)",
          paths: uPlot.paths.bars({ size: [0.95, 100] }), points: { show: false }
        }],
        axes: [{ label: h.title, size: 40 }, { label: "records", size: 50 }]
      }, [centers, h.counts], box);
      box.dataset.bins = String(h.counts.length);
    });
  }

  function accounting() {
    var series = json("accounting-data");
    var box = document.getElementById("accounting-chart");
    if (!series || !box || typeof uPlot === "undefined") return;
    new uPlot({
      width: box.clientWidth || 800, height: 220,
      scales: { x: { time: true } },
      series: [{}, {
        label: "core-hours", stroke: "#2e7d32", fill: "rgba(46,125,50,0.25)",
        paths: uPlot.paths.bars({ size: [0.8, 60] }), points: { show: false }
      }, {
        label: "failed core-hours", stroke: "#c62828", fill: "rgba(198,40,40,0.35)",
        paths: uPlot.paths.bars({ size: [0.4, 30] }), points: { show: false }
      }],
      axes: [{}, { label: "core-hours per day" }]
    }, [series.days, series.core_hours, series.failed_core_hours], box);
  }

  function molecule() {
    var box = document.getElementById("molecule-view");
    var xyz = document.getElementById("molecule-xyz");
    if (!box || !xyz || typeof $3Dmol === "undefined" || !xyz.textContent.trim()) return;
    var viewer = $3Dmol.createViewer(box, { backgroundColor: "white" });
    viewer.addModel(xyz.textContent, "xyz");
    viewer.setStyle({}, { stick: { radius: 0.15 }, sphere: { scale: 0.25 } });
    viewer.zoomTo();
    viewer.render();
    box.dataset.atoms = String(viewer.getModel().selectedAtoms({}).length);
  }

  document.addEventListener("DOMContentLoaded", function () {
    histograms();
    accounting();
    molecule();
  });
})();
