// A login link, /ui/?token=..., leaves the address bar (and the history entry) at once, as
// Jupyter's does: the token goes to this tab's sessionStorage only. A classic script, loaded
// first and blocking, so that it runs before the page renders or any module loads.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  if (!params.has("token")) return;
  var token = params.get("token");
  params.delete("token");
  if (token) window.sessionStorage.setItem("pvesphere.token", token);
  var rest = params.toString();
  window.history.replaceState(
    window.history.state,
    "",
    window.location.pathname + (rest ? "?" + rest : "") + window.location.hash
  );
})();
