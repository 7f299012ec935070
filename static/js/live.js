/*
 * Live operation updates for pages whose <body> carries data-live-url.
 *
 * Pages are complete without this script; it keeps them current from the
 * /ws/operations/ socket. Contract with the templates: an element showing one
 * operation has data-operation-id and data-status; inside it, data-field
 * elements (status, step, percent, done, total, error, elapsed, remaining)
 * hold text and <progress data-field="progress"> the percent. The operations
 * page has tbody#active-operations and tbody#recent-operations; an operation's
 * page has ol#operation-events. The socket resumes after the last event id
 * seen, so a reconnect never loses a final state. <body data-live-state>
 * says whether the socket is open.
 */
(function () {
  "use strict";

  var body = document.body;
  if (!body || !body.dataset.liveUrl || !("WebSocket" in window)) {
    return;
  }

  var ACTIVE = { pending: true, processing: true };
  var TYPE_LABELS = {
    index: "Index",
    append: "Append",
    reindex: "Reindex",
    remove_source: "Remove source",
    "delete": "Delete"
  };
  var MIN_DELAY_MS = 1000;
  var MAX_DELAY_MS = 30000;
  var PING_MS = 25000;
  var CLOSE_UNAUTHENTICATED = 4401;

  var lastSeen = parseInt(body.dataset.lastEvent, 10);
  if (isNaN(lastSeen)) {
    lastSeen = null;
  }
  var delay = MIN_DELAY_MS;
  var socket = null;
  var pingTimer = null;
  // Operation id -> {active, started_at, finished_at, done, total}, for the
  // badge count and the elapsed clock.
  var known = {};
  var snapshot = { seq: null, active: {} };

  function socketUrl() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + body.dataset.liveUrl;
  }

  function showStatus(text) {
    var status = document.getElementById("live-status");
    if (!status) {
      return;
    }
    if (text) {
      status.textContent = text;
      status.hidden = false;
    } else {
      status.hidden = true;
    }
  }

  function connect() {
    var opened = false;
    try {
      socket = new WebSocket(socketUrl());
    } catch (error) {
      scheduleReconnect(false, null);
      return;
    }
    socket.onopen = function () {
      opened = true;
      body.dataset.liveState = "open";
      delay = MIN_DELAY_MS;
      showStatus(null);
      socket.send(JSON.stringify({ type: "resume", last: lastSeen }));
      pingTimer = window.setInterval(function () {
        if (socket && socket.readyState === WebSocket.OPEN) {
          socket.send(JSON.stringify({ type: "ping" }));
        }
      }, PING_MS);
    };
    socket.onmessage = function (message) {
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      handle(data);
    };
    socket.onclose = function (event) {
      window.clearInterval(pingTimer);
      socket = null;
      body.dataset.liveState = "closed";
      scheduleReconnect(opened, event.code);
    };
  }

  function scheduleReconnect(wasOpen, code) {
    // A dropped connection retries quietly once; a failed attempt is shown.
    if (code === CLOSE_UNAUTHENTICATED) {
      showStatus("Live updates unavailable — log in again to resume them");
      delay = MAX_DELAY_MS;
    } else if (!wasOpen) {
      showStatus("Live updates unavailable — retrying");
    }
    var jittered = delay * (0.5 + Math.random() * 0.5);
    delay = Math.min(MAX_DELAY_MS, delay * 2);
    window.setTimeout(connect, jittered);
  }

  function handle(data) {
    if (typeof data.seq === "number" && (lastSeen === null || data.seq > lastSeen)) {
      lastSeen = data.seq;
    }
    var operation = data.operation;
    if (!operation || !operation.id) {
      return;
    }
    countActive(data.event, operation, data.seq);
    remember(operation);
    var elements = operationElements(operation.id);
    if (elements.length === 0) {
      elements = insertRow(operation);
    }
    elements.forEach(function (element) {
      render(element, operation);
    });
    placeRow(operation);
    appendHistory(data);
  }

  function operationElements(id) {
    return Array.prototype.slice.call(
      document.querySelectorAll('[data-operation-id="' + CSS.escape(id) + '"]')
    );
  }

  function fieldsOf(element, name) {
    return Array.prototype.slice.call(
      element.querySelectorAll('[data-field="' + name + '"]')
    );
  }

  function setField(element, name, value) {
    fieldsOf(element, name).forEach(function (field) {
      field.textContent = value;
    });
  }

  function render(element, operation) {
    var progress = operation.progress || {};
    var percent = progress.percent || 0;
    element.dataset.status = operation.status;
    fieldsOf(element, "status").forEach(function (field) {
      field.textContent = operation.status;
      field.className = field.className.replace(/\bstatus-\S+/g, "").trim();
      field.classList.add("status-" + operation.status);
    });
    setField(element, "step", operation.step || "");
    setField(element, "percent", String(percent));
    setField(element, "done", String(progress.done || 0));
    setField(element, "total", String(progress.total || 0));
    setField(element, "error", operation.error || "");
    fieldsOf(element, "progress").forEach(function (bar) {
      bar.value = percent;
      bar.textContent = percent + "%";
    });
    var counts = operation.counts || {};
    Object.keys(counts).forEach(function (name) {
      element.querySelectorAll('[data-count="' + CSS.escape(name) + '"]').forEach(
        function (cell) {
          cell.textContent = String(counts[name]);
        }
      );
    });
    renderTimes(element, operation.id);
    if (!ACTIVE[operation.status]) {
      endActions(element, operation.id);
    }
  }

  function remember(operation) {
    var progress = operation.progress || {};
    known[operation.id] = {
      active: !!ACTIVE[operation.status],
      started_at: operation.started_at,
      finished_at: operation.finished_at,
      done: progress.done || 0,
      total: progress.total || 0
    };
  }

  function activeBadge() {
    return document.querySelector('[data-field="active-count"], #active-operation-count');
  }

  function setBadge(badge, count) {
    count = Math.max(0, count);
    badge.textContent = String(count);
    badge.classList.toggle("count-active", count > 0);
  }

  function countActive(kind, operation, seq) {
    var badge = activeBadge();
    if (!badge) {
      return;
    }
    var isActive = !!ACTIVE[operation.status];
    if (kind === "snapshot") {
      // A snapshot lists every active operation, in one run of messages.
      if (seq !== snapshot.seq) {
        snapshot = { seq: seq, active: {} };
      }
      if (isActive) {
        snapshot.active[operation.id] = true;
      } else {
        delete snapshot.active[operation.id];
      }
      setBadge(badge, Object.keys(snapshot.active).length);
      return;
    }
    // The badge counted every operation active when the page was rendered.
    // An operation first seen through its "requested" event is new; any other
    // operation first seen now was active then, so it is already counted.
    var before = known[operation.id];
    var wasActive = before ? before.active : kind !== "requested";
    if (wasActive !== isActive) {
      setBadge(badge, (parseInt(badge.textContent, 10) || 0) + (isActive ? 1 : -1));
    }
  }

  function formatDuration(seconds) {
    if (seconds === null) {
      return "—";
    }
    seconds = Math.round(seconds);
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = seconds % 60;
    if (hours) {
      return hours + " h " + minutes + " min";
    }
    if (minutes) {
      return minutes + " min " + rest + " s";
    }
    return rest + " s";
  }

  function renderTimes(element, id) {
    var state = known[id];
    if (!state || !state.started_at) {
      return;
    }
    var end = state.finished_at ? Date.parse(state.finished_at) : Date.now();
    var elapsed = Math.max(0, (end - Date.parse(state.started_at)) / 1000);
    setField(element, "elapsed", formatDuration(elapsed));
    var remaining = null;
    if (state.active && state.done && state.total) {
      remaining = (elapsed * (state.total - state.done)) / state.done;
    }
    setField(element, "remaining", formatDuration(remaining));
  }

  function tickClocks() {
    Object.keys(known).forEach(function (id) {
      if (known[id].active) {
        operationElements(id).forEach(function (element) {
          renderTimes(element, id);
        });
      }
    });
  }

  function csrfToken() {
    var input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : null;
  }

  function endActions(element, id) {
    // A finished operation can no longer be cancelled; offer dismissal instead.
    var cancel = element.querySelector('form[action$="/cancel/"]');
    if (!cancel) {
      return;
    }
    var token = csrfToken();
    if (!token) {
      cancel.remove();
      return;
    }
    var form = document.createElement("form");
    form.className = "inline";
    form.method = "post";
    form.action = "/operations/" + encodeURIComponent(id) + "/dismiss/";
    form.appendChild(hiddenInput("csrfmiddlewaretoken", token));
    form.appendChild(hiddenInput("next", window.location.pathname));
    var button = document.createElement("button");
    button.type = "submit";
    button.className = "small";
    button.textContent = "Dismiss";
    form.appendChild(button);
    cancel.replaceWith(form);
  }

  function hiddenInput(name, value) {
    var input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    return input;
  }

  function cell(content, className) {
    var td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    if (typeof content === "string") {
      td.textContent = content;
    } else if (content) {
      td.appendChild(content);
    }
    return td;
  }

  function element(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function link(href, text) {
    return element("a", { href: href }, text);
  }

  function insertRow(operation) {
    // Only the operations page lists every operation; elsewhere a new one
    // shows up on the next load.
    var active = document.getElementById("active-operations");
    if (!active || !document.getElementById("recent-operations")) {
      return [];
    }
    var row = element("tr", {
      "data-operation-id": operation.id,
      "data-status": operation.status
    });

    var typeCell = cell(
      link("/operations/" + encodeURIComponent(operation.id) + "/",
        TYPE_LABELS[operation.type] || operation.type)
    );
    var created = element("div", { "class": "muted small" });
    created.appendChild(
      element("time", { datetime: operation.created_at || "" },
        (operation.created_at || "").replace("T", " ").slice(0, 19))
    );
    typeCell.appendChild(created);
    row.appendChild(typeCell);

    row.appendChild(cell(operation.collection_id
      ? link("/collections/" + encodeURIComponent(operation.collection_id) + "/",
        operation.collection)
      : operation.collection || ""));
    row.appendChild(cell(element("span", { "class": "badge", "data-field": "status" })));

    var progressCell = cell(null, "progress-cell");
    progressCell.appendChild(element("progress", { "data-field": "progress", max: "100", value: "0" }));
    var numbers = element("span", { "class": "small" });
    numbers.appendChild(element("span", { "data-field": "done" }, "0"));
    numbers.appendChild(document.createTextNode("/"));
    numbers.appendChild(element("span", { "data-field": "total" }, "0"));
    numbers.appendChild(document.createTextNode(" · "));
    numbers.appendChild(element("span", { "data-field": "percent" }, "0"));
    numbers.appendChild(document.createTextNode("%"));
    progressCell.appendChild(numbers);
    row.appendChild(progressCell);

    var step = cell("");
    step.setAttribute("data-field", "step");
    row.appendChild(step);
    row.appendChild(cell(element("span", { "data-field": "elapsed" }, "—"), "nowrap"));
    row.appendChild(cell(operation.requested_by || "system"));
    var error = cell("", "error-text");
    error.setAttribute("data-field", "error");
    row.appendChild(error);
    row.appendChild(cell(null, "nowrap"));

    placeInto(ACTIVE[operation.status] ? active : document.getElementById("recent-operations"), row);
    return [row];
  }

  function placeInto(tbody, row) {
    tbody.querySelectorAll(".empty-row").forEach(function (empty) {
      empty.remove();
    });
    tbody.insertBefore(row, tbody.firstChild);
  }

  function placeRow(operation) {
    var active = document.getElementById("active-operations");
    var recent = document.getElementById("recent-operations");
    if (!active || !recent || ACTIVE[operation.status]) {
      return;
    }
    var row = active.querySelector('tr[data-operation-id="' + CSS.escape(operation.id) + '"]');
    if (!row) {
      return;
    }
    placeInto(recent, row);
    if (!active.querySelector("tr[data-operation-id]")) {
      var empty = element("tr", { "class": "empty-row" });
      var td = element("td", { colspan: "9" }, "Nothing is running.");
      empty.appendChild(td);
      active.appendChild(empty);
    }
  }

  function appendHistory(data) {
    var list = document.getElementById("operation-events");
    var page = list && document.querySelector("section[data-operation-id]");
    if (!page || page.dataset.operationId !== data.operation.id || data.event === "snapshot") {
      return;
    }
    if (list.querySelector('[data-event-id="' + data.seq + '"]')) {
      return;
    }
    var operation = data.operation;
    var progress = operation.progress || {};
    var item = element("li", { "data-event-id": String(data.seq) });
    var now = new Date();
    item.appendChild(element("time", { datetime: now.toISOString() },
      now.toISOString().replace("T", " ").slice(0, 19)));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(element("strong", { "class": "kind" }, data.event));
    var parts = [];
    if (operation.step) {
      parts.push("step " + operation.step);
    }
    if (progress.total) {
      parts.push(progress.done + "/" + progress.total);
    }
    if (data.error) {
      parts.push("error: " + data.error);
    }
    if (parts.length) {
      item.appendChild(document.createTextNode(" "));
      item.appendChild(element("span", { "class": "muted" }, parts.join(", ")));
    }
    list.appendChild(item);
  }

  window.setInterval(tickClocks, 1000);
  connect();
})();
