// Refreshes the live part of a dashboard page every 5 seconds, in place. No framework, no
// third-party code; served from the binary (Content-Security-Policy: script-src 'self').
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  async function refresh() {
    try {
      const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/dashboard/sign-in"); return; }
      if (response.ok) live.innerHTML = await response.text();
    } catch (e) { /* the next tick tries again */ }
  }
  setInterval(refresh, 5000);
})();
