/* flopwise dashboard: render every chart (Vega-Lite spec in a JSON block) on load and after each htmx swap.
   Expressions run in the Vega interpreter (no eval), so the page keeps the CSP script-src 'self'. */
(function () {
  "use strict";
  function renderCharts(root) {
    var nodes = (root || document).querySelectorAll(".chart[data-spec-id]");
    Array.prototype.forEach.call(nodes, function (el) {
      if (el.getAttribute("data-rendered")) return;
      var block = document.getElementById(el.getAttribute("data-spec-id"));
      if (!block) return;
      el.setAttribute("data-rendered", "1");
      var spec = JSON.parse(block.textContent);
      window.vegaEmbed(el, spec, {
        actions: false, renderer: "svg", ast: true, expr: window.vega.expressionInterpreter
      }).then(function (result) {
        el.flopwiseView = result.view;
        el.setAttribute("data-ready", "1");
      }).catch(function (err) {
        el.textContent = "This chart could not be drawn (" + err.message + "); the table below has its numbers.";
        el.setAttribute("data-error", "1");
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { renderCharts(document); });
  document.addEventListener("htmx:afterSettle", function (event) { renderCharts(event.target); });
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) event.detail.headers["X-CSRF-Token"] = meta.getAttribute("content");
  });
  window.flopwiseCharts = { render: renderCharts };
})();
