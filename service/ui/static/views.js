// The list views: a series' stored profiles (each opens in Explore on its own), and the scrape
// targets with their health. They read the API as the rest of the page does (``api``).
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
