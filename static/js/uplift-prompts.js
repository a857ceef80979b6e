/*
 * Uplift in-app prompts: shows a user's pending upgrade prompts inside your product and reports
 * shown / clicked / dismissed back to Uplift. No dependencies, no cookies.
 *
 *   <script src="https://YOUR-UPLIFT/static/js/uplift-prompts.js"
 *           data-write-key="upl_wk_..." data-user-id="USER_ID" async></script>
 *
 * Optional: data-api-base (defaults to the origin this file is served from),
 * data-poll-seconds (default 60). window.Uplift.refresh() polls immediately.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var writeKey = script.getAttribute("data-write-key");
  var userId = script.getAttribute("data-user-id");
  var apiBase = (script.getAttribute("data-api-base") || new URL(script.src).origin).replace(/\/$/, "");
  var pollSeconds = parseInt(script.getAttribute("data-poll-seconds") || "60", 10);
  if (!writeKey || !userId) return;

  var auth = "Basic " + btoa(writeKey + ":");
  var shown = {};
  var hidden = {};
  var container = null;

  function report(id, event) {
    return fetch(apiBase + "/v1/prompts/" + id + "/events", {
      method: "POST",
      headers: { "Authorization": auth, "Content-Type": "application/json" },
      body: JSON.stringify({ userId: userId, event: event }),
      keepalive: true,
      mode: "cors"
    }).catch(function () { /* the next poll shows it again; nothing to do */ });
  }

  function ensureContainer() {
    if (container && document.body.contains(container)) return container;
    container = document.createElement("div");
    container.id = "uplift-prompts";
    container.setAttribute("role", "region");
    container.setAttribute("aria-label", "Offers");
    container.style.cssText = "position:fixed;right:16px;bottom:16px;z-index:2147483000;max-width:340px;" +
      "font-family:-apple-system,Segoe UI,sans-serif;font-size:14px;color:#1f2937";
    document.body.appendChild(container);
    return container;
  }

  function render(prompt) {
    var card = document.createElement("div");
    card.className = "uplift-prompt";
    card.setAttribute("data-prompt-id", String(prompt.id));
    card.style.cssText = "background:#fff;border:1px solid #e5e7eb;border-radius:10px;padding:14px 16px;" +
      "margin-top:10px;box-shadow:0 6px 24px rgba(0,0,0,.12);position:relative";
    var close = document.createElement("button");
    close.className = "uplift-dismiss";
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.style.cssText = "position:absolute;top:6px;right:8px;border:none;background:none;font-size:18px;cursor:pointer";
    var title = document.createElement("strong");
    title.className = "uplift-title";
    title.textContent = prompt.title;
    var body = document.createElement("p");
    body.className = "uplift-message";
    body.style.whiteSpace = "pre-line";
    body.textContent = prompt.message;
    var cta = document.createElement("a");
    cta.className = "uplift-cta";
    cta.href = prompt.upgrade_url;
    cta.target = "_blank";
    cta.rel = "noopener";
    cta.textContent = prompt.cta_label;
    cta.style.cssText = "display:inline-block;background:#4f46e5;color:#fff;padding:8px 14px;border-radius:6px;text-decoration:none";
    close.addEventListener("click", function () {
      hidden[prompt.id] = true;
      card.remove();
      report(prompt.id, "dismissed");
    });
    cta.addEventListener("click", function () {
      hidden[prompt.id] = true;
      report(prompt.id, "clicked").then(function () { card.remove(); });
    });
    card.appendChild(close);
    card.appendChild(title);
    card.appendChild(body);
    card.appendChild(cta);
    return card;
  }

  function refresh() {
    var url = apiBase + "/v1/prompts?userId=" + encodeURIComponent(userId);
    return fetch(url, { headers: { "Authorization": auth }, mode: "cors" })
      .then(function (response) { return response.ok ? response.json() : { prompts: [] }; })
      .then(function (data) {
        var box = ensureContainer();
        (data.prompts || []).forEach(function (prompt) {
          if (hidden[prompt.id] || box.querySelector('[data-prompt-id="' + prompt.id + '"]')) return;
          box.appendChild(render(prompt));
          if (!shown[prompt.id]) {
            shown[prompt.id] = true;
            report(prompt.id, "shown");
          }
        });
      })
      .catch(function () { /* offline or blocked: try again at the next poll */ });
  }

  window.Uplift = { refresh: refresh };
  function start() {
    refresh();
    if (pollSeconds > 0) setInterval(refresh, pollSeconds * 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
