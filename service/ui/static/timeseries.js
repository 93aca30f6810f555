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
    const points = series.length ? series[0].points : [];
    const data = [points.map((p) => p.ts / 1e9), points.map((p) => p.value)];
    this.window = [from, until];
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    const opts = {
      ...this.#size(),
      cursor: { drag: { x: true, y: false, setScale: false } },
      legend: { show: false },
      scales: { x: { time: true, range: () => this.window } },
      series: [{}, { label: "total", stroke: "#e8743b", fill: "rgba(232,116,59,0.15)", points: { show: true, size: 4 } }],
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
