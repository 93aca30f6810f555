// Compare: the base window (or selector) beside the current one, both flame graphs, their diff
// as one flame graph coloured by the change of each path's share, and /api/v1/diff's table.
import { changePoints, diffColour, mergeTrees } from "/ui/diff.js";
import { FlameGraph, fmt } from "/ui/flame.js";

const $ = (id) => document.getElementById(id);

export class Compare {
  constructor() {
    const tip = $("compare-tip");
    this.base = new FlameGraph($("base-flame"), tip);
    this.current = new FlameGraph($("current-flame"), tip);
    this.diff = new FlameGraph($("diff-flame"), tip, {
      colour: (n) => diffColour(changePoints(n, this.diff.root)),
      describe: (n) => {
        const r = this.diff.root;
        const pts = changePoints(n, r);
        return (
          `${n.name}\nbase ${fmt(n.base, this.unit)} (${((100 * n.base) / (r.base || 1)).toFixed(2)} %)\n` +
          `current ${fmt(n.current, this.unit)} (${((100 * n.current) / (r.current || 1)).toFixed(2)} %)\n` +
          `change ${pts > 0 ? "+" : ""}${pts.toFixed(2)} points`
        );
      },
    });
  }

  /** Fetch and draw: ``current`` and ``base`` are the API parameters of each window
   * ({query, from, until}); ``filters`` pprof's. Returns the diff answer. */
  async show(api, current, base, filters, unit, search = "") {
    this.unit = unit;
    for (const g of [this.base, this.current, this.diff]) g.unit = unit;
    const nodes = { max_nodes: 8192 };
    const diffParams = { ...current, ...filters, base_from: base.from, base_until: base.until, limit: 200 };
    if (base.query !== current.query) diffParams.base_query = base.query;
    const [b, c, d] = await Promise.all([
      api("/api/v1/flamegraph", { ...base, ...filters, ...nodes }),
      api("/api/v1/flamegraph", { ...current, ...filters, ...nodes }),
      api("/api/v1/diff", diffParams),
    ]);
    const empty = { name: "total", self: 0, total: 0, children: [] };
    const bt = b.tree || empty;
    const ct = c.tree || empty;
    this.base.setData(bt);
    this.current.setData(ct);
    this.diff.setData(mergeTrees(bt, ct));
    for (const g of [this.base, this.current, this.diff]) g.setSearch(search);
    const body = document.querySelector("#diff tbody");
    body.replaceChildren(
      ...d.rows.map((r) => {
        const tr = document.createElement("tr");
        if (search && r.name.toLowerCase().includes(search.toLowerCase())) tr.className = "match";
        const cls = r.change_points > 0 ? "worse" : r.change_points < 0 ? "better" : "";
        const rel = r.relative === null ? "new" : `${r.relative > 0 ? "+" : ""}${(100 * r.relative).toFixed(1)} %`;
        for (const [v, k] of [
          [r.name, ""], [r.base_percent.toFixed(2), ""], [r.current_percent.toFixed(2), ""],
          [`${r.change_points > 0 ? "+" : ""}${r.change_points.toFixed(2)}`, cls], [rel, cls],
        ]) {
          const td = document.createElement("td");
          td.textContent = v;
          if (k) td.className = k;
          tr.append(td);
        }
        return tr;
      }),
    );
    return d;
  }
}
