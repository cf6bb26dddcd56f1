// spoor's dashboard: the pages work without script; this only keeps the overview's live
// part current, by fetching it again from the server (same origin, the session cookie).
'use strict';
(function () {
  var REFRESH_MS = 10000;
  function refresh(panel) {
    var url = panel.getAttribute('data-live');
    fetch(url, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (response) {
        // Signed out meanwhile (the session ended): the page itself says so.
        if (response.redirected) {
          window.location.reload();
          throw new Error('signed out');
        }
        if (!response.ok) throw new Error('HTTP ' + response.status);
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('live');
        if (fresh) {
          panel.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () { /* the next round tries again */ })
      .finally(function () { schedule(); });
  }
  function schedule() {
    setTimeout(function () {
      var panel = document.getElementById('live');
      if (panel && !document.hidden) {
        refresh(panel);
      } else {
        schedule();
      }
    }, REFRESH_MS);
  }
  if (document.getElementById('live')) schedule();
})();
