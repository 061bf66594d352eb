// The DeFiBus console: reads the proxy's JSON API (GET /v1/cluster, /v1/topics, /v1/groups,
// /v1/services, /v1/trace; POST /v1/services/{id}/{action}) and draws one page at a time. Plain DOM calls
// and textContent only: names from the bus are never parsed as markup. No build step.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const TOKEN_KEY = "defibus.console.token";
  const PAGES = ["cluster", "topics", "groups", "services", "lookup"];

  // The previous read of each page, for rates: [read_at_ms, {key: offset}].
  const previous = { topics: null, groups: null };
  let timer = null;
  let loading = false;

  // ---- small DOM helpers ----
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("data-")) node.setAttribute(name, String(value));
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
  const td = (value, cls) => el("td", { class: cls }, [value]);
  const tdNum = (value, cls) => el("td", { class: "num " + (cls || "") }, [num(value)]);

  function table(caption, headers, rows, attrs) {
    const head = el("tr", {}, headers.map((h) => {
      const [label, cls] = Array.isArray(h) ? h : [h, ""];
      return el("th", { scope: "col", class: cls }, [label]);
    }));
    const cap = caption ? el("caption", {}, Array.isArray(caption) ? caption : [caption]) : null;
    return el("table", attrs || {}, [cap, el("thead", {}, [head]), el("tbody", {}, rows)]);
  }
  function empty(text) {
    return el("p", { class: "empty" }, [text]);
  }
  function rate(value) {
    return value === null ? "–" : value.toFixed(value < 10 ? 1 : 0);
  }
  function ago(ms) {
    if (ms < 1000) return ms + " ms ago";
    return (ms / 1000).toFixed(1) + " s ago";
  }

  // ---- the token (security on) ----
  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }
  function showSignOut() {
    $("sign-out").hidden = !token();
  }

  // ---- the API ----
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    let response;
    try {
      response = await fetch(path, { method, headers, cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "unreachable", "the proxy cannot be reached: " + e.message);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiError(response.status, error.code || "http_" + response.status,
        error.message || response.statusText);
    }
    return body;
  }

  // ---- pages ----
  function currentPage() {
    const name = location.hash.replace("#", "");
    return PAGES.includes(name) ? name : "cluster";
  }

  function showPage(name) {
    for (const page of PAGES) $("page-" + page).hidden = page !== name;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = "DeFiBus console: " + name;
  }

  function fill(name, nodes) {
    const body = $("page-" + name).querySelector(".body");
    body.replaceChildren(...nodes);
  }

  function drawCluster(data) {
    const nodes = [];
    nodes.push(el("h3", {}, ["Brokers"]));
    if (data.brokers.length === 0) nodes.push(empty("The nameservers know no live broker."));
    const rows = data.brokers.map((b) => el("tr", { "data-broker": b.broker_id }, [
      el("th", { scope: "row" }, [b.broker_id]),
      td(b.cluster), td(b.area), td(b.address), tdNum(b.topic_count),
      td(ago(b.registered_ms_ago)), tdNum(b.shards.length),
      td(b.error ? b.error : "ok", b.error ? "error" : ""),
    ]));
    if (rows.length) {
      nodes.push(table(null, ["Broker", "Cluster", "Area", "Address", ["Topics", "num"],
        "Registered", ["Shards", "num"], "Statistics"], rows, { id: "brokers" }));
    }
    for (const b of data.brokers) {
      const shardRows = b.shards.map((s) => el("tr", { "data-shard": s.shard_id }, [
        el("th", { scope: "row" }, [String(s.shard_id)]), td(s.port === null ? "–" : String(s.port), "num"),
        tdNum(s.connections), tdNum(s.bad_frames), tdNum(s.replies),
      ]));
      nodes.push(table(["Shards of " + b.broker_id],
        [["Shard", ""], ["Port", "num"], ["Connections", "num"], ["Bad frames", "num"],
          ["Replies", "num"]], shardRows, { "data-broker": b.broker_id, class: "shards" }));
    }
    if (data.truncated) nodes.push(empty("More brokers are live than one answer lists."));
    nodes.push(el("h3", {}, ["Nameservers"]));
    const nsRows = data.nameservers.map((n) => el("tr", {}, [
      el("th", { scope: "row" }, [n.address]),
      td(el("span", { class: "state " + (n.reachable ? "reachable" : "unreachable") },
        [n.reachable ? "reachable" : "unreachable"])),
      tdNum(n.brokers), td(n.error || ""),
    ]));
    nodes.push(table(null, ["Nameserver", "State", ["Brokers known", "num"], "Error"], nsRows,
      { id: "nameservers" }));
    fill("cluster", nodes);
  }

  // Per-second change of each keyed offset since the previous read of `page`.
  function rates(page, readAt, offsets) {
    const before = previous[page];
    previous[page] = [readAt, offsets];
    const out = {};
    if (!before || readAt <= before[0]) return out;
    const seconds = (readAt - before[0]) / 1000;
    for (const [key, value] of Object.entries(offsets)) {
      if (key in before[1] && value >= before[1][key]) out[key] = (value - before[1][key]) / seconds;
    }
    return out;
  }

  function drawTopics(data) {
    const offsets = {};
    for (const t of data.topics) {
      for (const q of t.queues) offsets[t.topic + "|" + q.broker_id + "|" + q.queue_id] = q.next_offset;
    }
    const perSecond = rates("topics", data.read_at_ms, offsets);
    const nodes = [];
    if (data.topics.length === 0) nodes.push(empty("No topics yet: defibus admin topic create --topic A10-20190001"));
    for (const t of data.topics) {
      let topicRate = null;
      const rows = t.queues.map((q) => {
        const r = perSecond[t.topic + "|" + q.broker_id + "|" + q.queue_id];
        if (r !== undefined) topicRate = (topicRate || 0) + r;
        const depth = q.depth === null ? 0 : q.depth;
        const meter = el("meter", {
          min: 0, max: q.max_depth, low: Math.floor(q.max_depth * 0.5),
          high: Math.floor(q.max_depth * 0.8), optimum: 0, value: depth,
          "aria-label": "depth of queue " + q.queue_id + " against its limit",
        }, [depth + " of " + q.max_depth]);
        return el("tr", { "data-topic": t.topic, "data-broker": q.broker_id, "data-queue": q.queue_id }, [
          td(q.broker_id),
          el("th", { scope: "row" }, [String(q.queue_id)]),
          tdNum(q.shard_id),
          tdNum(q.start_offset, "start"),
          tdNum(q.next_offset, "end"),
          el("td", { class: "depth-cell" }, [el("span", { class: "depth" }, [meter,
            el("span", { class: "depth-text" }, [el("span", { class: "depth-value" }, [num(q.depth)]),
              " / ", el("span", { class: "depth-limit" }, [num(q.max_depth)])])])]),
          td(r === undefined ? "–" : rate(r), "num rate"),
          tdNum(q.expired_requests),
          td(el("span", { class: "state " + (q.damaged_at === null ? "ok" : "damaged") },
            [q.damaged_at === null ? "ok" : "damaged at " + q.damaged_at])),
          td((q.readable ? "r" : "-") + (q.writable ? "w" : "-")),
        ]);
      });
      const caption = [t.topic, el("span", { class: "sub" }, [
        "flush " + t.flush + ", limit " + num(t.max_queue_depth) + " per queue, " +
        t.replicas + (t.replicas === 1 ? " replica" : " replicas") + ", depth " + num(t.depth) +
        ", in " + (topicRate === null ? "–" : rate(topicRate)) + " msg/s"])];
      nodes.push(table(caption, ["Broker", "Queue", ["Shard", "num"], ["Start", "num"], ["End", "num"],
        "Depth / limit", ["In msg/s", "num"], ["Expired requests", "num"], "Data", "Access"], rows,
      { "data-topic": t.topic, class: "topic" }));
    }
    if (data.truncated) nodes.push(empty("More topics exist than one answer lists: GET /v1/topics?topic=NAME reads one."));
    errorsNote(nodes, data.errors);
    fill("topics", nodes);
  }

  function drawGroups(data) {
    const offsets = {};
    for (const g of data.groups) {
      for (const q of g.queues) {
        if (q.committed_offset !== null) offsets[g.group + "|" + g.topic + "|" + q.broker_id + "|" + q.queue_id] = q.committed_offset;
      }
    }
    const perSecond = rates("groups", data.read_at_ms, offsets);
    const nodes = [];
    if (data.groups.length === 0) nodes.push(empty("No consumer group has progress on any queue yet."));
    for (const g of data.groups) {
      const rows = g.queues.map((q) => {
        const r = perSecond[g.group + "|" + g.topic + "|" + q.broker_id + "|" + q.queue_id];
        return el("tr", { "data-group": g.group, "data-topic": g.topic, "data-broker": q.broker_id, "data-queue": q.queue_id }, [
          td(q.broker_id),
          el("th", { scope: "row" }, [String(q.queue_id)]),
          td(q.member || "(none)"),
          tdNum(q.delivered_offset, "delivered"),
          tdNum(q.committed_offset, "committed"),
          tdNum(q.next_offset, "end"),
          tdNum(q.lag, "lag"),
          td(r === undefined ? "–" : rate(r), "num rate"),
        ]);
      });
      const members = g.members.length ? g.members.join(", ") : "none holding a queue";
      const caption = [g.group + " on " + g.topic, el("span", { class: "sub" }, [
        "lag ", el("span", { class: "group-lag" }, [num(g.lag)]), ", members: " + members])];
      nodes.push(table(caption, ["Broker", "Queue", "Member", ["Delivered", "num"], ["Committed", "num"],
        ["End", "num"], ["Lag", "num"], ["Commits/s", "num"]], rows,
      { "data-group": g.group, "data-topic": g.topic, class: "group" }));
    }
    if (data.truncated) nodes.push(empty("More groups exist than one answer lists."));
    errorsNote(nodes, data.errors);
    fill("groups", nodes);
  }

  function errorsNote(nodes, errors) {
    for (const e of errors || []) {
      nodes.push(el("p", { class: "error" }, ["Broker " + e.broker_id + " could not be read: " + e.message]));
    }
  }

  function drawServices(data) {
    const nodes = [el("p", { class: "hint" }, ["From the SGS at " + data.sgs + "."])];
    if (data.services.length === 0) {
      nodes.push(empty("No services yet: defibus sgs service apply --id 20190003 --areas A10"));
    }
    const rows = data.services.map((s) => {
      const gsl = s.resolve_error ? el("span", { class: "error" }, [s.resolve_error])
        : s.resolved_areas === null ? "–"
          : s.resolved_areas.length ? s.resolved_areas.join(", ") : "not resolved";
      const buttons = s.actions.map((action) => el("button", {
        type: "button", class: action === "offline" ? "danger" : "",
        "data-action": action, "data-service": s.service_id,
        "aria-label": action + " service " + s.service_id,
      }, [action === "deploy" ? "Deploy" : "Take offline"]));
      return el("tr", { "data-service": s.service_id }, [
        el("th", { scope: "row" }, [s.service_id]),
        td(s.name), td(s.owner),
        td(el("span", { class: "state " + s.state }, [s.state]), "service-state"),
        td(s.areas.join(", ")), td(s.topics.join(", ")), td(gsl),
        tdNum(s.queue_count), tdNum(s.max_queue_depth), td(s.flush),
        el("td", { class: "actions" }, buttons),
      ]);
    });
    if (rows.length) {
      nodes.push(table(null, ["Service", "Name", "Owner", "State", "Areas", "Topics", "GSL resolves",
        ["Queues", "num"], ["Depth limit", "num"], "Flush", "Actions"], rows, { id: "services" }));
    }
    if (data.truncated) nodes.push(empty("More services exist than one answer lists."));
    fill("services", nodes);
  }

  const READERS = {
    cluster: ["/v1/cluster", drawCluster],
    topics: ["/v1/topics", drawTopics],
    groups: ["/v1/groups", drawGroups],
    services: ["/v1/services", drawServices],
  };

  // ---- messages ----
  function problem(text) {
    const box = $("problem");
    box.textContent = text || "";
    box.hidden = !text;
  }
  function notice(text) {
    const box = $("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }
  function describe(error) {
    if (error.status === 403) {
      return "Permission denied (403): " + error.message +
        ". Ask an administrator for a grant (defibus admin acl grant ...).";
    }
    if (error.status === 0) return error.message;
    return "Error " + error.status + " (" + error.code + "): " + error.message;
  }

  function askForToken(reason) {
    for (const page of PAGES) $("page-" + page).hidden = true;
    $("login").hidden = false;
    $("login-reason").textContent = reason;
    $("updated").textContent = "Signed out";
    $("token").focus();
  }

  // ---- refresh ----
  // The page drawn last; `document.body.dataset.loaded` names it once its data is shown.
  let drawn = null;
  let again = false;

  async function refresh() {
    const name = currentPage();
    if (name !== drawn) {
      // Another page: show it at once, and say that its data is on the way.
      drawn = name;
      delete document.body.dataset.loaded;
      showPage(name);
      $("updated").textContent = READERS[name] ? "Loading…" : "Nothing to refresh on this page";
    }
    if (loading) {
      again = true; // read again once the read in flight ends
      return;
    }
    const reader = READERS[name];
    if (!reader) {
      document.body.dataset.loaded = name;
      return;
    }
    loading = true;
    try {
      const data = await api("GET", reader[0]);
      if (currentPage() !== name) return; // the user moved on meanwhile
      $("login").hidden = true;
      showPage(name);
      reader[1](data);
      problem(null);
      $("updated").textContent = "Updated at " + new Date(data.read_at_ms).toLocaleTimeString("en-GB");
      document.body.dataset.loaded = name;
    } catch (error) {
      if (error.status === 401) {
        drawn = null;
        askForToken(token() ? "The token was refused: " + error.message : "Sign in to continue.");
      } else {
        problem(describe(error));
        $("updated").textContent = "Update failed at " + new Date().toLocaleTimeString("en-GB");
      }
    } finally {
      loading = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if ($("auto-refresh").checked && !document.hidden && $("login").hidden) await refresh();
      schedule();
    }, REFRESH_MS);
  }

  // ---- lifecycle actions, confirmed first ----
  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").onclick = null;
        $("confirm-cancel").onclick = null;
        dialog.close();
        resolve(answer);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dialog.oncancel = () => done(false);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function runAction(button) {
    const service = button.dataset.service;
    const action = button.dataset.action;
    const what = action === "deploy"
      ? "Deploy service " + service + "? Its topic is created in each of its areas and GSL starts resolving it."
      : "Take service " + service + " offline? GSL stops resolving it, and once its queues drain its topics and their messages are deleted.";
    if (!(await confirmAction(what))) return;
    button.disabled = true;
    notice("Running " + action + " of service " + service + "…");
    try {
      const record = await api("POST", "/v1/services/" + encodeURIComponent(service) + "/" + action);
      problem(null);
      notice("Service " + record.service_id + " is now " + record.state + ".");
      await refresh();
    } catch (error) {
      notice(null);
      if (error.status === 401) askForToken("Sign in to continue.");
      else problem(action + " of service " + service + " failed. " + describe(error));
    } finally {
      button.disabled = false;
    }
  }

  // ---- message lookup (GET /v1/trace): asked on submit, never refreshed ----
  const when = (ms) => (ms === null || ms === undefined ? "–" : new Date(ms).toISOString());

  function facts(pairs) {
    const nodes = [];
    for (const [term, value] of pairs) {
      nodes.push(el("dt", { text: term }), el("dd", {}, [value]));
    }
    return el("dl", { class: "facts" }, nodes);
  }

  function commitText(c) {
    switch (c.state) {
      case "committed": return "committed at " + when(c.at_ms);
      case "not_committed": return "not committed";
      case "after": return "committed after " + when(c.at_ms) + " (search budget reached)";
      default: return "unknown: " + (c.reason || "");
    }
  }

  function replyText(r) {
    switch (r.state) {
      case "found": return "stored at " + when(r.at_ms) + ", shard " + r.shard_id +
        " reply queue offset " + r.offset;
      case "not_found": return "none found";
      case "after": return "after " + when(r.at_ms) + " (search budget reached)";
      default: return "unknown: " + (r.reason || "");
    }
  }

  function drawMessage(m) {
    const trace = m.trace ? m.trace.traceparent + (m.trace.tracestate ? " (" + m.trace.tracestate + ")" : "") : "–";
    const nodes = [
      el("h4", { text: m.type + " at offset " + num(m.offset) }),
      facts([
        ["stored", when(m.stored_ms)],
        ["created", when(m.created_ms)],
        ["batch", "offsets " + num(m.batch_base_offset) + "…, " + num(m.batch_records) + " records"],
        ["key", m.key === null ? "–" : m.key],
        ["value", num(m.value_bytes) + " bytes"],
        ["traceparent", trace],
      ]),
    ];
    if (m.request) {
      nodes.push(facts([
        ["deadline", when(m.request.deadline_ms) + (m.request.expired ? " (expired)" : "")],
        ["reply to", m.request.reply_to],
        ["reply", replyText(m.request.reply)],
      ]));
    }
    const rows = m.groups.map((g) => el("tr", { "data-group": g.group }, [
      el("th", { scope: "row", text: g.group }),
      td(g.assigned_to || "–"),
      td(g.pushes.length
        ? g.pushes.map((p) => when(p.at_ms) + " → " + p.client_id).join("; ")
        : "none since " + when(g.pushes_remembered_since_ms)),
      tdNum(g.committed_offset),
      td(commitText(g.committed), "committed"),
    ]));
    nodes.push(rows.length
      ? table("Groups", ["Group", "Member now", "Pushed", ["Committed offset", "num"], "Committed past it"], rows)
      : empty("No group consumes this queue."));
    return el("article", { class: "message" }, nodes);
  }

  function drawTrace(data) {
    const nodes = [];
    for (const q of data.queues) {
      nodes.push(el("h3", {
        text: data.topic + " queue " + q.queue_id + " on " + q.broker_id + " shard " + q.shard_id +
          " (offsets " + num(q.start_offset) + " to " + num(q.next_offset) + ")",
      }));
      if (q.messages.length === 0) nodes.push(empty("No such message in this queue."));
      for (const m of q.messages) nodes.push(drawMessage(m));
    }
    if (nodes.length === 0) nodes.push(empty("No queue of " + data.topic + " matches."));
    fill("lookup", nodes);
  }

  async function lookup() {
    const params = new URLSearchParams({ topic: $("lookup-topic").value.trim() });
    const offset = $("lookup-offset").value.trim();
    const key = $("lookup-key").value;
    const queue = $("lookup-queue").value.trim();
    if ((offset === "") === (key === "")) {
      problem("Give an offset or a key (one of them).");
      return;
    }
    if (offset !== "") params.set("offset", offset);
    else params.set("key", key);
    if (queue !== "") params.set("queue", queue);
    delete document.body.dataset.loaded;
    try {
      const data = await api("GET", "/v1/trace?" + params.toString());
      problem(null);
      drawTrace(data);
      $("updated").textContent = "Looked up at " + new Date().toLocaleTimeString("en-GB");
      document.body.dataset.loaded = "lookup";
    } catch (error) {
      if (error.status === 401) askForToken("Sign in to continue.");
      else problem("Lookup failed. " + describe(error));
    }
  }

  // ---- start ----
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      $("login").hidden = true;
      showSignOut();
      refresh();
    });
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignOut();
      askForToken("Signed out.");
    });
    $("page-services").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button) runAction(button);
    });
    $("lookup-form").addEventListener("submit", (event) => {
      event.preventDefault();
      lookup();
    });
    $("auto-refresh").addEventListener("change", schedule);
    window.addEventListener("hashchange", () => {
      notice(null);
      problem(null);
      refresh();
    });
    showSignOut();
    refresh();
    schedule();
  });
})();
