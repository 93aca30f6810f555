// An icicle flame graph on a canvas: the root on top, callees below, widths by total value.
// Canvas rather than SVG: one fillRect and at most one fillText per visible frame, so a tree of
// thousands of nodes draws in milliseconds and a zoom is one more draw.

const ROW = 18; // px per depth
const MIN_PX = 0.5; // frames narrower than this are not drawn (their parent's width still counts them)

/** The package of a Go function name, for its colour: "crypto/sha256.block" -> "crypto/sha256". */
export function packageOf(name) {
  const slash = name.lastIndexOf("/");
  const dot = name.indexOf(".", slash + 1);
  return dot < 0 ? name : name.slice(0, dot);
}

function hue(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return (h >>> 0) % 360;
}

export class FlameGraph {
  /** ``colour(node)``: a fill instead of the package's colour (a diff); ``describe(node)``: the
   * tooltip's text instead of self and total. The canvas keeps a handle (``canvas.flameGraph``)
   * for what inspects it, such as the browser tests. */
  constructor(canvas, tooltip, { onZoom = () => {}, unit = "", colour = null, describe = null } = {}) {
    this.canvas = canvas;
    canvas.flameGraph = this;
    this.colour = colour;
    this.describe = describe;
    this.tooltip = tooltip;
    this.onZoom = onZoom;
    this.unit = unit;
    this.root = null;
    this.focus = null; // the zoomed node (null: the root)
    this.search = "";
    this.rects = []; // what the last draw put where: [x, y, w, node]
    canvas.addEventListener("click", (e) => this.#click(e));
    canvas.addEventListener("mousemove", (e) => this.#hover(e));
    canvas.addEventListener("mouseleave", () => (this.tooltip.hidden = true));
    canvas.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.zoom(null);
    });
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  /** A new tree ({name, self, total, children}); zooms to ``path`` (names from the root) if it exists. */
  setData(tree, path = []) {
    this.root = tree;
    (function link(node, parent) {
      node.parent = parent;
      for (const c of node.children) link(c, node);
    })(tree, null);
    this.focus = this.find(path);
    this.draw();
  }

  /** The node at ``path`` (names below the root), or null. */
  find(path) {
    let node = this.root;
    for (const name of path) {
      node = node && node.children.find((c) => c.name === name);
      if (!node) return null;
    }
    return path.length ? node : null;
  }

  pathOf(node) {
    const out = [];
    for (let n = node; n && n.parent; n = n.parent) out.unshift(n.name);
    return out;
  }

  zoom(node) {
    this.focus = node && node.parent ? node : null;
    this.draw();
    this.onZoom(this.focus ? this.pathOf(this.focus) : []);
  }

  setSearch(text) {
    this.search = text.trim().toLowerCase();
    this.draw();
  }

  matches(name) {
    return this.search !== "" && name.toLowerCase().includes(this.search);
  }

  /** Draw the tree; returns the milliseconds it took. */
  draw() {
    const t0 = performance.now();
    const canvas = this.canvas;
    const width = canvas.parentElement.clientWidth || 800;
    this.rects = [];
    if (!this.root) {
      canvas.height = 0;
      return 0;
    }
    const depth = maxDepth(this.root);
    const ratio = window.devicePixelRatio || 1;
    canvas.style.height = `${(depth + 1) * ROW}px`;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round((depth + 1) * ROW * ratio);
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // Above the focus: its ancestors, full width; from the focus down, its subtree over the width.
    const chain = [];
    for (let n = this.focus; n; n = n.parent) chain.unshift(n);
    if (!chain.length) chain.push(this.root);
    chain.forEach((n, d) => this.#frame(ctx, n, 0, d, width, n !== chain[chain.length - 1]));
    const top = chain[chain.length - 1];
    const scale = top.total > 0 ? width / top.total : 0;
    const walk = (node, x, d) => {
      let cx = x;
      for (const c of node.children) {
        const w = c.total * scale;
        if (w >= MIN_PX) {
          this.#frame(ctx, c, cx, d, w, false);
          walk(c, cx, d + 1);
        }
        cx += w;
      }
    };
    walk(top, 0, chain.length);
    return performance.now() - t0;
  }

  #frame(ctx, node, x, d, w, ancestor) {
    const y = d * ROW;
    const searching = this.search !== "";
    const hit = this.matches(node.name);
    const h = hue(packageOf(node.name));
    ctx.fillStyle =
      searching && !hit ? "#d0d4d9"
      : this.colour ? this.colour(node)
      : ancestor ? `hsl(${h} 25% 80%)`
      : `hsl(${h} 60% ${hit ? 55 : 72}%)`;
    ctx.fillRect(x, y, Math.max(w - 0.5, 0.5), ROW - 1);
    if (w > 30) {
      ctx.fillStyle = "#1d2329";
      const label = fit(ctx, node.name, w - 6);
      if (label) ctx.fillText(label, x + 3, y + ROW / 2);
    }
    this.rects.push([x, y, w, node]);
  }

  #at(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    for (const [fx, fy, fw, node] of this.rects) {
      if (x >= fx && x < fx + fw && y >= fy && y < fy + ROW) return { node, x, y };
    }
    return null;
  }

  #click(e) {
    const hit = this.#at(e);
    if (hit) this.zoom(hit.node);
  }

  #hover(e) {
    const hit = this.#at(e);
    if (!hit) {
      this.tooltip.hidden = true;
      return;
    }
    const total = this.root.total || 1;
    const n = hit.node;
    const pct = (v) => ((100 * v) / total).toFixed(2);
    this.tooltip.textContent = this.describe
      ? this.describe(n)
      : `${n.name}\nself ${fmt(n.self, this.unit)} (${pct(n.self)} %)\n` +
        `total ${fmt(n.total, this.unit)} (${pct(n.total)} %)`;
    this.tooltip.hidden = false;
    this.tooltip.style.left = `${this.canvas.offsetLeft + Math.min(hit.x + 12, this.canvas.clientWidth - 260)}px`;
    this.tooltip.style.top = `${this.canvas.offsetTop + hit.y + ROW + 4}px`;
  }
}

function maxDepth(node) {
  let d = 0;
  const stack = [[node, 0]];
  while (stack.length) {
    const [n, k] = stack.pop();
    if (k > d) d = k;
    for (const c of n.children) stack.push([c, k + 1]);
  }
  return d;
}

function fit(ctx, text, px) {
  if (ctx.measureText(text).width <= px) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ctx.measureText(text.slice(0, mid) + "…").width <= px) lo = mid;
    else hi = mid - 1;
  }
  return lo > 1 ? text.slice(0, lo) + "…" : "";
}

/** ``v`` in ``unit`` (the profile type's sample unit) as people read it: 1.2 s, 3.4 MiB, 5.6k. */
export function fmt(v, unit = "") {
  const a = Math.abs(v);
  const pick = (steps) => {
    let [div, name] = steps[0];
    for (const [d, n] of steps) if (a >= d) [div, name] = [d, n];
    const x = v / div;
    return `${Math.abs(x) >= 100 || Number.isInteger(x) ? Math.round(x) : x.toPrecision(3)}${name}`;
  };
  if (unit === "nanoseconds") return pick([[1, " ns"], [1e3, " µs"], [1e6, " ms"], [1e9, " s"], [6e10, " min"], [3.6e12, " h"]]);
  if (unit === "bytes") return pick([[1, " B"], [1024, " KiB"], [1024 ** 2, " MiB"], [1024 ** 3, " GiB"], [1024 ** 4, " TiB"]]);
  return pick([[1, ""], [1e3, "k"], [1e6, "M"], [1e9, "G"], [1e12, "T"]]);
}
