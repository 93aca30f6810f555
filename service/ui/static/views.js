// The list views: a series' stored profiles (each opens in Explore on its own), the findings
// (each opens as a diff), and the scrape targets with their health. They read the API as the rest of the page does (``api``).
import { fmt } from "/ui/flame.js";

function cell(tr, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  tr.append(td);
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/** The stored profiles matching ``query`` in the range, newest first; ``open(profile)`` shows one. */
export async function showProfiles(api, params, unit, open) {
  const page = await api("/api/v1/profiles", { ...params, limit: 500 });
  const body = document.querySelector("#profiles tbody");
  body.replaceChildren(
    ...page.profiles.map((p) => {
      const tr = document.createElement("tr");
      cell(tr, new Date(p.ts / 1e6).toLocaleString());
      cell(tr, Object.entries(p.labels).map(([k, v]) => `${k}="${v}"`).join(", "));
      cell(tr, fmt(p.total, unit));
      cell(tr, String(p.samples));
      cell(tr, p.duration_ns ? fmt(p.duration_ns, "nanoseconds") : "");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Open";
      button.addEventListener("click", () => open(p));
      cell(tr, "").append(button);
      return tr;
    }),
  );
  return page.profiles.length + (page.truncated ? "+" : "");
}

/** Every target x profile type the collector scrapes, with its health and last error. */
export async function showTargets(api) {
  const answer = await api("/api/v1/targets");
  const body = document.querySelector("#targets tbody");
  body.replaceChildren(
    ...answer.targets.map((t) => {
      const tr = document.createElement("tr");
      cell(tr, t.job);
      cell(tr, t.instance);
      cell(tr, t.profile);
      cell(tr, t.health, `health-${t.health}`);
      cell(tr, when(t.last_scrape));
      cell(tr, t.last_outcome || "");
      cell(tr, t.last_error ? `${t.last_error_kind}: ${t.last_error}` : "");
      cell(tr, when(t.next_run));
      return tr;
    }),
  );
  return answer.targets;
}

/** The findings (``filters``: service, kind, state), newest first; ``open(finding)`` shows its diff,
 * ``ack(finding)`` acknowledges it. */
export async function showFindings(api, filters, open, ack) {
  const list = await api("/api/v1/regressions", Object.fromEntries(Object.entries(filters).filter(([, v]) => v)));
  const body = document.querySelector("#findings tbody");
  body.replaceChildren(
    ...list.map((f) => {
      const tr = document.createElement("tr");
      tr.dataset.id = f.id;
      cell(tr, f.kind);
      cell(tr, f.state, `state-${f.state}`);
      cell(tr, f.service);
      // The hover shows the caller path carrying most of the rise, and the change point's interval.
      const top = f.details.paths?.[0];
      cell(tr, f.title).title = top ? top.frames.join(" ← ") : "";
      const interval = f.change_interval?.map((ns) => new Date(ns / 1e6).toLocaleString());
      cell(tr, new Date(f.change_ts / 1e6).toLocaleString()).title = interval ? `95 %: ${interval.join(" – ")}` : "";
      cell(tr, f.relative >= 1e9 ? "new" : `${f.relative > 0 ? "+" : ""}${(100 * f.relative).toFixed(1)} %`);
      cell(tr, f.instances.join(", "));
      cell(tr, Object.entries(f.attribution).map(([k, v]) => `${k}: ${v.from.join("/")} → ${v.to.join("/")}`).join("; "));
      const actions = cell(tr, "");
      const diff = document.createElement("button");
      diff.type = "button";
      diff.textContent = "Open diff";
      diff.addEventListener("click", () => open(f));
      actions.append(diff);
      if (f.state === "open") {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Acknowledge";
        b.addEventListener("click", () => ack(f));
        actions.append(" ", b);
      }
      return tr;
    }),
  );
  return list;
}
