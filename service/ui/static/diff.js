// One tree of two: every call path of the base or the current window, with its total in each.
// Widths are base + current (so code that went away still shows), the colour is the change of
// its share of its window's total: red grew, green shrank, as Pyroscope and Parca colour diffs.

/** ``base`` and ``current`` ({name, self, total, children}) merged by path: nodes of
 * {name, total: base + current, base, current, children}. */
export function mergeTrees(base, current) {
  const root = { name: "total", total: 0, self: 0, base: 0, current: 0, children: [] };
  const add = (into, node, side) => {
    into[side] += node.total;
    into.total += node.total;
    for (const c of node.children) {
      let m = into.children.find((x) => x.name === c.name);
      if (!m) {
        m = { name: c.name, total: 0, self: 0, base: 0, current: 0, children: [] };
        into.children.push(m);
      }
      add(m, c, side);
    }
  };
  add(root, base, "base");
  add(root, current, "current");
  const sort = (n) => {
    n.children.sort((a, b) => b.total - a.total);
    n.children.forEach(sort);
  };
  sort(root);
  return root;
}

/** The change of ``node``'s share between the windows, in percentage points. */
export function changePoints(node, root) {
  const share = (v, t) => (t > 0 ? (100 * v) / t : 0);
  return share(node.current, root.current) - share(node.base, root.base);
}

/** Red for a share that grew, green for one that shrank, grey for none; stronger with the change. */
export function diffColour(points) {
  const strength = Math.min(Math.abs(points) / 5, 1); // 5 points or more: full colour
  if (strength < 0.02) return "hsl(0 0% 82%)";
  const light = 85 - 35 * strength;
  return points > 0 ? `hsl(0 75% ${light}%)` : `hsl(120 55% ${light}%)`;
}
