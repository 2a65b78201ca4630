// fleetpy's dashboard: renders what /events pushes (see fleetpy/api/dashboard.py): a snapshot
// of the cluster, then deltas (units and machines set or gone) applied to it in order; a
// delta that does not follow the last one applied (a message was missed) reconnects for a
// new snapshot.
// Everything shown comes from users (unit names, metadata, messages): it reaches the page
// only as text (textContent, attribute values), never as markup.
"use strict";
(function () {
  const MAX_ROWS = 2000; // per table; filter to see the rest
  const PHASES = ["active", "loaded", "inactive", "starting", "moving", "unplaced", "failed", "stopping"];
  const NO_MACHINE = "(none)"; // not a machine id: those are hex or names without parentheses
  let doc = null; // {revision, leader, summary, deployments, seq, machines: [...], units: [...]}
  const units = new Map(); // name -> row
  const machinesById = new Map(); // id -> row
  let namesChanged = true; // units or machines added or removed: sort their lists again
  let unitNames = [];
  let machineIds = [];
  let messages = 0;
  let resyncs = 0;
  let source = null;
  let renderQueued = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function chips(cls, items) {
    const cell = el("td", null, cls);
    for (const item of items) cell.appendChild(el("span", item));
    return cell;
  }

  function short(commit) {
    return commit ? String(commit).slice(0, 12) : "";
  }

  function metadataPairs() {
    return $("filter-metadata").value.split(",").map((part) => part.trim()).filter(Boolean)
      .map((part) => {
        const at = part.indexOf("=");
        return at < 0 ? [part, null] : [part.slice(0, at).trim(), part.slice(at + 1).trim()];
      });
  }

  function machineMatches(machine, pairs) {
    return pairs.every(([key, value]) =>
      Object.prototype.hasOwnProperty.call(machine.metadata, key) &&
      (value === null || machine.metadata[key] === value));
  }

  function unitMachines(unit) {
    const all = new Set(unit.machines);
    if (unit.machine) all.add(unit.machine);
    return Array.from(all);
  }

  function syncSelect(select, values, label) {
    const chosen = select.value;
    const wanted = [""].concat(values);
    if (chosen && !wanted.includes(chosen)) wanted.push(chosen); // keep a filter on a gone machine
    const have = Array.from(select.options).map((o) => o.value);
    if (have.join("\n") !== wanted.join("\n")) {
      select.replaceChildren();
      for (const value of wanted) select.appendChild(new Option("", value));
      select.value = chosen;
    }
    for (const option of select.options) option.textContent = label(option.value);
  }

  function fill(tbody, rows, total, columns) {
    tbody.replaceChildren();
    for (const row of rows.slice(0, MAX_ROWS)) tbody.appendChild(row);
    if (rows.length > MAX_ROWS) {
      const more = el("tr", null, "more");
      const cell = el("td", `${rows.length - MAX_ROWS} more: narrow the filters to see them`);
      cell.colSpan = columns;
      more.appendChild(cell);
      tbody.appendChild(more);
    }
  }

  function snapshot(data) {
    doc = data;
    units.clear();
    machinesById.clear();
    for (const u of data.units) units.set(u.name, u);
    for (const m of data.machines) machinesById.set(m.id, m);
    namesChanged = true;
  }

  function applyDelta(delta) {
    for (const name of delta.gone) namesChanged = units.delete(name) || namesChanged;
    for (const u of delta.units) {
      if (!units.has(u.name)) namesChanged = true;
      units.set(u.name, u);
    }
    for (const id of delta.machines_gone) namesChanged = machinesById.delete(id) || namesChanged;
    for (const m of delta.machines) {
      if (!machinesById.has(m.id)) namesChanged = true;
      machinesById.set(m.id, m);
    }
    doc.revision = delta.revision;
    doc.leader = delta.leader;
    doc.summary = delta.summary;
    if (delta.deployments !== undefined) doc.deployments = delta.deployments;
    doc.seq = delta.seq;
  }

  function sorted(keys) {
    return Array.from(keys).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  function current() {
    if (namesChanged) {
      unitNames = sorted(units.keys());
      machineIds = sorted(machinesById.keys());
      namesChanged = false;
    }
    doc.units = unitNames.map((n) => units.get(n));
    doc.machines = machineIds.map((id) => machinesById.get(id));
  }

  function queueRender() { // one render per frame however many messages came
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
  }

  function render() {
    if (doc === null) return;
    current();
    const phaseCounts = doc.summary.phases;
    $("leader").textContent = doc.leader || "none";
    $("count-machines").textContent = doc.summary.machines;
    $("count-units").textContent = doc.summary.units;
    $("revision").textContent = doc.revision;
    document.body.dataset.revision = String(doc.revision);
    document.body.dataset.messages = String(messages);
    document.body.dataset.seq = String(doc.seq);
    document.body.dataset.resyncs = String(resyncs);

    syncSelect($("filter-phase"), PHASES, (v) => v === "" ? "all" : `${v} (${phaseCounts[v] || 0})`);
    syncSelect($("filter-machine"), machineIds.concat([NO_MACHINE]), (v) =>
      v === "" ? "all" : v === NO_MACHINE ? "(none)" : machineIds.includes(v) ? v : `${v} (gone)`);
    const counts = $("phase-counts");
    counts.replaceChildren();
    for (const phase of PHASES) {
      if (phaseCounts[phase]) counts.appendChild(el("span", `${phase} ${phaseCounts[phase]}`));
    }

    const phase = $("filter-phase").value;
    const machine = $("filter-machine").value;
    const pairs = metadataPairs();
    const name = $("filter-name").value.trim().toLowerCase();
    const matching = new Set(doc.machines.filter((m) => machineMatches(m, pairs)).map((m) => m.id));

    const machines = doc.machines.filter((m) =>
      matching.has(m.id) && (machine === "" || machine === m.id));
    fill($("machines").tBodies[0], machines.map((m) => {
      const tr = el("tr");
      tr.dataset.machine = m.id;
      const id = m.cordon ? `${m.id} (${m.cordon})` : m.id;
      const host = m.resources ? `${m.hostname} · ${m.resources}` : m.hostname;
      tr.append(el("td", id, "id"), el("td", m.ip, "ip"), el("td", host, "hostname"),
        chips("metadata", Object.entries(m.metadata).map(([k, v]) => `${k}=${v}`)),
        chips("units", m.units));
      return tr;
    }), doc.machines.length, 5);
    $("shown-machines").textContent = `${machines.length} of ${doc.machines.length}`;

    const units = doc.units.filter((u) => {
      const where = unitMachines(u);
      if (phase !== "" && u.phase !== phase) return false;
      if (name !== "" && !u.name.toLowerCase().includes(name)) return false;
      if (machine === NO_MACHINE && where.length > 0) return false;
      if (machine !== "" && machine !== NO_MACHINE && !where.includes(machine)) return false;
      if (pairs.length > 0 && !where.some((m) => matching.has(m))) return false;
      return true;
    });
    fill($("units").tBodies[0], units.map((u) => {
      const tr = el("tr");
      tr.dataset.unit = u.name;
      tr.dataset.phase = u.phase;
      const commit = el("td", short(u.commit), "commit");
      if (u.commit) commit.title = u.commit;
      tr.append(el("td", u.name, "name"), el("td", u.phase, "phase"), el("td", u.desired, "desired"),
        el("td", u.machine || u.machines.join(", ") || "\u2014", "machine"),
        el("td", u.load, "load"), el("td", u.active, "active"), el("td", u.sub, "sub"),
        el("td", u.health || "", "health"),
        el("td", [u.detail, u.message].filter(Boolean).join(": "), "detail"),
        el("td", u.owner || "", "owner"), commit);
      return tr;
    }), doc.units.length, 10);
    $("shown-units").textContent = `${units.length} of ${doc.units.length}`;

    const unplaced = doc.units.filter((u) => u.phase === "unplaced" &&
      (name === "" || u.name.toLowerCase().includes(name)));
    fill($("unplaced").tBodies[0], unplaced.map((u) => {
      const tr = el("tr");
      tr.dataset.unit = u.name;
      tr.append(el("td", u.name, "name"), el("td", u.desired, "desired"),
        el("td", u.reason || u.detail, "reason"));
      return tr;
    }), unplaced.length, 3);
    $("shown-unplaced").textContent = String(unplaced.length);

    fill($("deployments").tBodies[0], doc.deployments.map((d) => {
      const tr = el("tr");
      tr.dataset.deployment = d.name;
      tr.append(el("td", d.name, "name"), el("td", short(d.commit), "commit"),
        el("td", short(d.applying), "applying"),
        el("td", `${d.updated}/${d.units}`, "updated"), el("td", `${d.ready}/${d.units}`, "ready"),
        el("td", d.message, "message"));
      if (d.target) tr.title = `target commit ${d.target}`;
      return tr;
    }), doc.deployments.length, 6);
  }

  function connect() {
    const params = new URLSearchParams(location.search);
    const token = params.get("token");
    source = new EventSource("events" + (token ? "?token=" + encodeURIComponent(token) : ""));
    if (token) { // the server set a cookie for reloads; keep the token out of the address bar
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
    }
    const connection = $("connection");
    source.addEventListener("view", (event) => {
      snapshot(JSON.parse(event.data));
      messages += 1;
      connection.dataset.state = "live";
      connection.textContent = "live";
      queueRender();
    });
    source.addEventListener("delta", (event) => {
      const delta = JSON.parse(event.data);
      messages += 1;
      if (doc === null || delta.seq !== doc.seq + 1) { // missed one: start again from a snapshot
        resyncs += 1;
        source.close();
        doc = null;
        connect();
        return;
      }
      applyDelta(delta);
      queueRender();
    });
    source.onerror = () => { // the browser reconnects with Last-Event-ID: deltas or a snapshot
      connection.dataset.state = "lost";
      connection.textContent = source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting";
    };
    source.onopen = () => {
      if (doc !== null) {
        connection.dataset.state = "live";
        connection.textContent = "live";
      }
    };
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["filter-phase", "filter-machine"]) $(id).addEventListener("change", render);
    for (const id of ["filter-metadata", "filter-name"]) {
      $(id).addEventListener("input", render);
      $(id).addEventListener("change", render);
    }
    connect();
  });
})();
