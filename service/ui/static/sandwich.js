// A sandwich of one function, from a merged call tree: its callers (every path that reaches it,
// the function first, then who called it) and its callees (everything below it, merged). Only
// the outermost call of a recursive function counts, so no value is counted twice.

function node(name) {
  return { name, self: 0, total: 0, children: [] };
}

function child(parent, name) {
  let c = parent.children.find((x) => x.name === name);
  if (!c) {
    c = node(name);
    parent.children.push(c);
  }
  return c;
}

function addInto(into, from) {
  into.self += from.self;
  into.total += from.total;
  for (const c of from.children) addInto(child(into, c.name), c);
}

/** ``{callers, callees}`` of ``name`` in ``tree``; both rooted at the function (null: not found). */
export function sandwich(tree, name) {
  const callers = node(name);
  const callees = node(name);
  let found = false;
  const walk = (n, path) => {
    if (n.name === name && path.length) {
      found = true;
      callers.total += n.total;
      callers.self += n.self;
      let at = callers;
      for (let i = path.length - 1; i >= 1; i--) { // the root ("total") is not a caller
        at = child(at, path[i]);
        at.total += n.total;
      }
      addInto(callees, n);
      return; // the outermost call only
    }
    path.push(n.name);
    for (const c of n.children) walk(c, path);
    path.pop();
  };
  walk(tree, []);
  const sort = (n) => {
    n.children.sort((a, b) => b.total - a.total);
    n.children.forEach(sort);
  };
  sort(callers);
  sort(callees);
  return found ? { callers, callees } : null;
}
