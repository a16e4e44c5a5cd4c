// The loss chart: hand-written SVG with train and validation lines, axes, a legend and a text summary for
// screen readers. `add(points)` redraws; points are {step, train_loss, valid_loss}. Other series of the same
// points (a DPO run's reward accuracy) are drawn by a chart built with their keys; `setMarkers` draws a vertical
// line where a job's later part (a resume, a retry) starts.

import { h, svg, replace, nextId } from "./dom.js";

const W = 640;
const H = 280;
const PAD = { top: 16, right: 20, bottom: 40, left: 56 };
const MAX_MARKERS = 400;

function niceTicks(min, max, count) {
  if (min === max) { min -= 1; max += 1; }
  const span = max - min;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  const end = Math.ceil(max / step - 1e-9) * step;
  for (let v = Math.floor(min / step) * step; v <= end + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function decimals(step) {
  return Math.min(4, (String(step).split(".")[1] || "").length);
}

const LOSS_SERIES = [{ key: "train_loss", label: "Training loss", cls: "train" },
  { key: "valid_loss", label: "Validation loss", cls: "valid" }];

export class LossChart {
  /** `series`: [{key, label, cls, higherIsBetter}] of each point to draw (cls: train or valid, the line's style). */
  constructor({ series = LOSS_SERIES, yLabel = "Loss", title = "Loss by step", yRange = null,
    emptyText = "Loss appears here once training starts" } = {}) {
    this.series = series;
    this.yRange = yRange; // a fixed [min, max] (a fraction's 0 to 1) instead of one fitted to the points
    this.yLabel = yLabel;
    this.markers = [];
    this.points = new Map(); // step -> point
    this.emptyText = emptyText;
    this.titleId = nextId("chart-title");
    this.descId = nextId("chart-desc");
    this.svg = svg("svg", { class: "chart-svg", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-labelledby": this.titleId, "aria-describedby": this.descId, preserveAspectRatio: "xMidYMid meet" });
    this.summary = h("p", { class: "chart-summary", id: this.descId, "aria-live": "polite" });
    this.legend = h("ul", { class: "chart-legend", "aria-hidden": "true" },
      series.map((s) => h("li", { class: `legend-${s.cls}` }, h("span", { class: "swatch" }), s.label)));
    this.element = h("figure", { class: "chart" }, h("figcaption", { class: "sr-only", id: this.titleId }, title),
      this.legend, h("div", { class: "chart-frame" }, this.svg), this.summary);
    this.render();
  }

  /** Add points (history or live); a repeated step replaces the earlier one. */
  add(points) {
    for (const p of points) {
      if (p && Number.isFinite(Number(p.step))) {
        const prev = this.points.get(Number(p.step)) || {};
        this.points.set(Number(p.step), { ...prev, ...p, step: Number(p.step) });
      }
    }
    this.render();
  }

  /** What the empty chart says (a finished job with no recorded loss says so). */
  setEmptyText(text) {
    if (text === this.emptyText) return;
    this.emptyText = text;
    if (!this.points.size) this.render();
  }

  /** Vertical lines before the given steps: [{step, label}] (where a job's later part starts). */
  setMarkers(markers) {
    const next = markers.filter((m) => Number.isFinite(Number(m.step)));
    if (JSON.stringify(next) === JSON.stringify(this.markers)) return;
    this.markers = next;
    this.render();
  }

  get size() {
    return this.points.size;
  }

  render() {
    const pts = [...this.points.values()].sort((a, b) => a.step - b.step);
    const lines = this.series.map((s) => ({ ...s, data: pts.filter((p) => Number.isFinite(p[s.key])).map((p) => [p.step, p[s.key]]) }));
    replace(this.svg);
    lines.slice(1).forEach((s, i) => { this.legend.children[i + 1].hidden = !s.data.length; });
    this.svg.dataset.points = String(lines.reduce((n, s) => n + s.data.length, 0));
    this.svg.dataset.markers = "0";
    const innerW = W - PAD.left - PAD.right;
    const innerH = H - PAD.top - PAD.bottom;
    if (!lines.some((s) => s.data.length)) {
      this.svg.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" },
        this.emptyText));
      this.summary.textContent = `${this.emptyText}.`;
      this.summary.classList.add("sr-only"); // the chart says it already
      return;
    }
    const all = lines.flatMap((s) => s.data);
    const minX = Math.min(...all.map((p) => p[0]));
    const maxX = Math.max(...all.map((p) => p[0]), minX + 1);
    const lo = Math.min(...all.map((p) => p[1]));
    const hi = Math.max(...all.map((p) => p[1]));
    const yTicks = this.yRange ? niceTicks(Math.min(this.yRange[0], lo), Math.max(this.yRange[1], hi), 5)
      : niceTicks(Math.max(0, lo - (hi - lo) * 0.1), hi + (hi - lo) * 0.1 || hi + 1, 5);
    const minY = yTicks[0];
    const maxY = yTicks[yTicks.length - 1];
    const x = (v) => PAD.left + ((v - minX) / (maxX - minX)) * innerW;
    const y = (v) => PAD.top + innerH - ((v - minY) / (maxY - minY || 1)) * innerH;
    const grid = svg("g", { class: "chart-grid" });
    const places = decimals(yTicks.length > 1 ? Number((yTicks[1] - yTicks[0]).toPrecision(6)) : 1);
    for (const t of yTicks) {
      grid.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(t), y2: y(t) }));
      grid.append(svg("text", { x: PAD.left - 8, y: y(t) + 4, "text-anchor": "end", class: "chart-tick" }, t.toFixed(places)));
    }
    for (const t of niceTicks(minX, maxX, 6).filter((v) => v >= minX && v <= maxX && Number.isInteger(v))) {
      grid.append(svg("line", { x1: x(t), x2: x(t), y1: H - PAD.bottom, y2: H - PAD.bottom + 5, class: "chart-axis" }));
      grid.append(svg("text", { x: x(t), y: H - PAD.bottom + 18, "text-anchor": "middle", class: "chart-tick" }, String(t)));
    }
    grid.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "chart-axis" }));
    grid.append(svg("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "chart-axis" }));
    grid.append(svg("text", { x: PAD.left + innerW / 2, y: H - 6, "text-anchor": "middle", class: "chart-label" }, "Step"));
    grid.append(svg("text", { x: 14, y: PAD.top + innerH / 2, "text-anchor": "middle", class: "chart-label",
      transform: `rotate(-90 14 ${PAD.top + innerH / 2})` }, this.yLabel));
    this.svg.append(grid);
    const markers = this.markers.filter((m) => m.step - 0.5 > minX && m.step - 0.5 < maxX);
    for (const m of markers) {
      const mx = x(m.step - 0.5).toFixed(1);
      this.svg.append(svg("g", { class: "chart-marker" }, svg("line", { x1: mx, x2: mx, y1: PAD.top, y2: H - PAD.bottom }),
        svg("text", { x: Number(mx) + 4, y: PAD.top + 10, class: "chart-tick" }, m.label), svg("title", `${m.label}: from step ${m.step}`)));
    }
    this.svg.dataset.markers = String(markers.length);
    for (const { data: series, cls } of lines) {
      if (!series.length) continue;
      const line = series.map(([sx, sy]) => `${x(sx).toFixed(1)},${y(sy).toFixed(1)}`).join(" ");
      const group = svg("g", { class: `series series-${cls}` }, svg("polyline", { points: line, class: "chart-line" }));
      if (series.length <= MAX_MARKERS) {
        for (const [sx, sy] of series) {
          group.append(svg("circle", { cx: x(sx).toFixed(1), cy: y(sy).toFixed(1), r: series.length > 60 ? 1.6 : 3,
            class: "chart-point" }, svg("title", `Step ${sx}: ${sy.toFixed(4)}`)));
        }
      }
      this.svg.append(group);
    }
    this.summary.classList.remove("sr-only");
    this.summary.textContent = [...lines.filter((s) => s.data.length).map((s) => describe(s.data, s.label, s.higherIsBetter)),
      ...markers.map((m) => `${m.label} starts at step ${m.step}.`)].join(" ");
  }
}

function describe(series, name, higherIsBetter = false) {
  const [s0, v0] = series[0];
  const [s1, v1] = series[series.length - 1];
  const best = (higherIsBetter ? Math.max : Math.min)(...series.map((p) => p[1]));
  return `${name}: ${v0.toFixed(3)} at step ${s0}, ${v1.toFixed(3)} at step ${s1} (${higherIsBetter ? "highest" : "lowest"} ${best.toFixed(3)}, ${series.length} points).`;
}
