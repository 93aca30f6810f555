// The selection's total per step, drawn by uPlot (vendored: service/ui/static/vendor). Dragging
// across it selects a range, which the view then shows (the graph itself does not zoom).
import { fmt } from "/ui/flame.js";

export class TimeSeries {
  constructor(el, { onSelect = () => {} } = {}) {
    this.el = el;
    this.onSelect = onSelect;
    this.plot = null;
    new ResizeObserver(() => this.plot && this.plot.setSize(this.#size())).observe(el.parentElement);
  }

  #size() {
    return { width: this.el.parentElement.clientWidth - 32 || 800, height: 160 };
  }

  /** ``series``: the API's [{labels, points: [{ts (ns), value}]}], the first one drawn over the
   * window ``[from, until]`` (unix seconds): the axis is the range asked for, not the data's. */
  setData(series, from, until, unit = "") {
    this.unit = unit;
    // One line per series (a group_by answer has one per group), on the union of their steps.
    const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.ts)))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const ys = series.map((s) => {
      const y = new Array(xs.length).fill(null);
      for (const p of s.points) y[at.get(p.ts)] = p.value;
      return y;
    });
    const data = [xs.map((x) => x / 1e9), ...(ys.length ? ys : [[]])];
    const names = series.length ? series.map((s) => Object.values(s.labels).join(", ") || "total") : ["total"];
    this.window = [from, until];
    if (this.plot && this.names && this.names.join("\u001f") === names.join("\u001f")) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.names = names;
    const opts = {
      ...this.#size(),
      cursor: { drag: { x: true, y: false, setScale: false } },
      legend: { show: names.length > 1 },
      scales: { x: { time: true, range: () => this.window } },
      series: [
        {},
        ...names.map((label, i) => ({
          label,
          stroke: names.length === 1 ? "#e8743b" : `hsl(${(i * 137) % 360} 65% 45%)`,
          fill: names.length === 1 ? "rgba(232,116,59,0.15)" : undefined,
          points: { show: true, size: 4 },
          spanGaps: false,
        })),
      ],
      axes: [{}, { size: 80, values: (_u, ticks) => ticks.map((v) => fmt(v, this.unit)) }],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width < 2) return;
            const a = u.posToVal(u.select.left, "x");
            const b = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            this.onSelect(Math.floor(a * 1000), Math.ceil(b * 1000));
          },
        ],
      },
    };
    this.plot = new uPlot(opts, data, this.el); // eslint-disable-line no-undef
  }
}
