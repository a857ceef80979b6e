// Draws the trend chart from the JSON the server renders beside it; redraws after htmx swaps.
(function () {
  let chart = null;
  function draw() {
    const canvas = document.getElementById("trend-chart");
    const source = document.getElementById("trend-data");
    if (!canvas || !source || typeof Chart === "undefined") return;
    const data = JSON.parse(source.textContent);
    if (chart) chart.destroy();
    chart = new Chart(canvas, {
      data: {
        labels: data.labels,
        datasets: [
          { type: "line", label: "Ending MRR ($)", data: data.mrr, borderColor: "#4f46e5", yAxisID: "y" },
          { type: "bar", label: "Expansion ($)", data: data.expansion, backgroundColor: "#10b981", yAxisID: "y1" },
          { type: "bar", label: "Contraction + churn ($)", data: data.contraction_churn, backgroundColor: "#ef4444", yAxisID: "y1" },
        ],
      },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { y: { position: "left" }, y1: { position: "right", grid: { drawOnChartArea: false } } },
      },
    });
    canvas.dataset.drawn = "true";
  }
  window.addEventListener("load", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
