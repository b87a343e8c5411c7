/* qspace UI: the API token, kept in this browser session only.
 *
 * The header's token field writes to a dcc.Store with storage_type "session" (window.sessionStorage, cleared
 * with the tab). Every Dash request carries it as X-Qspace-Token; the UI's server uses it for the API calls it
 * makes while serving that request. Thumbnails are <img> tags, which cannot send headers: a session cookie
 * (no expiry, SameSite=Strict, path /api/) carries the token for them, and the API accepts a cookie for GET
 * requests only, with at most the read scope.
 */
(function () {
  "use strict";

  var KEY = "api-token-store"; // frontend/ids.py TOKEN_STORE: dcc.Store keeps its data under its id, as JSON

  function token() {
    try {
      var value = JSON.parse(window.sessionStorage.getItem(KEY));
      return typeof value === "string" && value ? value : null;
    } catch (e) {
      return null;
    }
  }

  function setCookie(value) {
    document.cookie =
      "qspace_token=" + encodeURIComponent(value || "") + "; path=/api/; SameSite=Strict" + (value ? "" : "; max-age=0");
  }

  var plainFetch = window.fetch;
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : (input && input.url) || "";
    var t = token();
    if (t && url.indexOf("_dash-") !== -1) {
      init = init || {};
      var headers = new Headers(init.headers || {});
      headers.set("X-Qspace-Token", t);
      init.headers = headers;
    }
    return plainFetch.call(this, input, init);
  };

  setCookie(token()); // a reload keeps the session's token for thumbnails too

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    qspace_token: {
      keep: function (value) {
        var t = (value || "").trim();
        setCookie(t);
        return t || null;
      },
    },
  });
})();
