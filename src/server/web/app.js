// The operator's page: plain JavaScript against the public REST API (PROTOCOL.md parts 1-2).
// Nothing here is stored in the browser: the admin token lives in the page until it is left.
"use strict";

(function () {
  const API = "/api/v1/clusters";
  // Keys the agents write, in the order they arrive: the status view long-polls the first one
  // still missing instead of re-reading the list on a timer.
  const AWAITED = ["master_ip", "master_ready"];
  const WAIT_SECS = 30;
  // After a failed request the watch retries, slower each time, up to this pause.
  const MAX_BACKOFF_MS = 30000;
  const SEALED_PREFIX = "ccs1.";
  const PIN_PATTERN = /^[a-z0-9]{12}$/;

  const $ = (id) => document.getElementById(id);

  let cluster = null; // The created cluster: {pin, expires_at}; the token only in its input.
  let secret = null; // The cluster secret, generated once per created PIN when asked for.
  let watch = null; // The running status watch: {pin, controller}.

  // 16 random bytes as base64url without padding: 22 characters of [A-Za-z0-9_-], what
  // `clusterctx pin create --secret` makes too.
  function newSecret() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function block(pin, master) {
    const lines = ["[ucernvm-begin]", "cvm_cluster_pin=" + pin, "cvm_cluster_master=" + master];
    if (secret) {
      lines.push("cvm_cluster_secret=" + secret);
    }
    lines.push("cvm_service_url=" + location.origin, "[ucernvm-end]");
    return lines.join("\n") + "\n";
  }

  function showTime(element, rfc3339) {
    if (!rfc3339) {
      element.textContent = "never";
      element.removeAttribute("datetime");
      return;
    }
    element.dateTime = rfc3339;
    const when = new Date(rfc3339);
    element.textContent = isNaN(when) ? rfc3339 : when.toLocaleString() + " (" + rfc3339 + ")";
  }

  function renderBlocks() {
    if (!cluster) {
      return;
    }
    secret = $("seal").checked ? secret || newSecret() : null;
    $("block-master").textContent = block(cluster.pin, "yes");
    $("block-worker").textContent = block(cluster.pin, "no");
    $("block-auto").textContent = block(cluster.pin, "auto");
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) {
        return body.error + " (HTTP " + response.status + ")";
      }
    } catch (_) {
      // Not our JSON error body: the status says enough.
    }
    return "HTTP " + response.status;
  }

  async function createCluster(event) {
    event.preventDefault();
    const button = $("create");
    const error = $("create-error");
    button.disabled = true;
    error.hidden = true;
    try {
      const response = await fetch(API, { method: "POST", headers: { Accept: "application/json" } });
      if (response.status !== 201) {
        throw new Error(await errorText(response));
      }
      const info = await response.json();
      cluster = { pin: info.pin, expires_at: info.expires_at };
      secret = null;
      $("pin").textContent = info.pin;
      showTime($("expires"), info.expires_at);
      $("admin-token").value = info.admin_token || "";
      // A service in legacy mode (open, no tokens) has none to show.
      $("token").hidden = !info.admin_token;
      $("status-link").href = "#status/" + info.pin;
      renderBlocks();
      $("created").hidden = false;
      $("created-title").focus();
    } catch (err) {
      error.textContent = "The PIN could not be created: " + err.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  async function copy(event) {
    const button = event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    const source = $(button.dataset.copy);
    const text = source.value !== undefined ? source.value : source.textContent;
    const said = $("copied");
    try {
      await navigator.clipboard.writeText(text);
      said.textContent = "Copied.";
      button.classList.add("done");
      setTimeout(() => button.classList.remove("done"), 1500);
    } catch (_) {
      // No clipboard outside a secure context: select the text for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(source);
      if (source.select) {
        source.select();
      } else {
        getSelection().removeAllRanges();
        getSelection().addRange(range);
      }
      said.textContent = "Selected: press Ctrl+C to copy.";
    }
  }

  function renderKeys(items) {
    const body = $("keys-body");
    body.replaceChildren();
    items.sort((a, b) => a.key.localeCompare(b.key));
    for (const item of items) {
      const row = document.createElement("tr");
      row.dataset.key = item.key;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = item.key;
      const value = document.createElement("td");
      if (item.value.startsWith(SEALED_PREFIX)) {
        value.textContent = "sealed";
        value.className = "sealed";
      } else {
        value.textContent = item.value;
      }
      row.append(name, value);
      body.append(row);
    }
    $("keys").hidden = items.length === 0;
    $("keys-empty").hidden = items.length !== 0;
  }

  function live(text) {
    $("status-live").textContent = text;
  }

  function stopWatch() {
    if (watch) {
      watch.controller.abort();
      watch = null;
    }
  }

  async function getJson(url, signal) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, signal });
    if (!response.ok) {
      const error = new Error(await errorText(response));
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // Reads the cluster and its keys, then parks on the first awaited key that is missing; when
  // it arrives (or the wait ends) reads again. Stops when every awaited key is there, when the
  // cluster is gone, or when the view changes.
  async function runWatch(pin, signal) {
    const base = API + "/" + encodeURIComponent(pin);
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        const info = await getJson(base, signal);
        showTime($("status-expires"), info.expires_at);
        const items = await getJson(base + "/keys", signal);
        renderKeys(items);
        $("status").hidden = false;
        const present = new Set(items.map((item) => item.key));
        const next = AWAITED.find((key) => !present.has(key));
        if (!next) {
          live("master_ip and master_ready are set: the master is ready. Refresh for later keys.");
          return;
        }
        live("Waiting for " + next + "…");
        const response = await fetch(base + "/keys/" + next + "?wait=" + WAIT_SECS, {
          headers: { Accept: "application/json" },
          signal,
        });
        // 200: it arrived; 404: the wait ended first. Anything else: read again to learn why.
        if (response.status !== 200 && response.status !== 404) {
          throw Object.assign(new Error(await errorText(response)), { status: response.status });
        }
        // Read to the end: the connection is free again for the next request.
        await response.text();
        backoff = 1000;
      } catch (err) {
        if (signal.aborted) {
          return;
        }
        if (err.status === 404 || err.status === 410) {
          $("status").hidden = false;
          renderKeys([]);
          live("No such cluster, or it has expired: " + err.message);
          return;
        }
        live("The service did not answer (" + err.message + "); trying again.");
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }

  function startWatch(pin) {
    stopWatch();
    const controller = new AbortController();
    watch = { pin, controller };
    $("status-pin").value = pin;
    $("status-pin-shown").textContent = pin;
    live("Reading…");
    runWatch(pin, controller.signal);
  }

  function current(link, yes) {
    if (yes) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }

  function route() {
    const hash = location.hash.replace(/^#/, "");
    const status = hash === "status" || hash.startsWith("status/");
    $("create-view").hidden = status;
    $("status-view").hidden = !status;
    current($("nav-create"), !status);
    current($("nav-status"), status);
    if (!status) {
      stopWatch();
      return;
    }
    const pin = hash.slice("status/".length);
    if (PIN_PATTERN.test(pin)) {
      if (!watch || watch.pin !== pin) {
        startWatch(pin);
      }
    } else {
      stopWatch();
      $("status").hidden = true;
      $("status-pin").focus();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("create-form").addEventListener("submit", createCluster);
    $("seal").addEventListener("change", renderBlocks);
    document.addEventListener("click", copy);
    $("status-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const pin = $("status-pin").value.trim();
      if (PIN_PATTERN.test(pin)) {
        location.hash = "#status/" + pin;
      }
    });
    $("refresh").addEventListener("click", () => {
      if (watch) {
        startWatch(watch.pin);
      }
    });
    window.addEventListener("hashchange", route);
    route();
  });
})();
