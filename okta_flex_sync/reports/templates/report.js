/* Applies the filter from the form or from the URL hash (#q=…&kind=…&severity=…), so a link
   can carry a filter and headless tests can observe it with --dump-dom.  A row is searched by
   its text, the full values of truncated cells (their titles) and the ids it does not show. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("findings-data").textContent);
  var rows = document.querySelectorAll("#findings tbody tr[data-i]");
  var kinds = Array.prototype.map.call(rows, function (row) {
    var section = row.closest("section");
    return section ? section.getAttribute("data-kind") : "";
  });
  var hay = Array.prototype.map.call(rows, function (row) {
    var parts = [row.textContent], titled = row.querySelectorAll("[title]");
    for (var j = 0; j < titled.length; j++) { parts.push(titled[j].getAttribute("title")); }
    var extra = data.rows[+row.getAttribute("data-i")];
    if (extra) { parts.push(extra.join("\n")); }
    return parts.join("\n").toLowerCase();
  });
  var q = document.getElementById("f-q"), kind = document.getElementById("f-kind"),
      sev = document.getElementById("f-severity"), shown = document.getElementById("shown-count");
  function apply(updateHash) {
    var text = q.value.trim().toLowerCase(), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = i < hay.length && (!text || hay[i].indexOf(text) !== -1) &&
               (!kind.value || kinds[i] === kind.value) &&
               (!sev.value || row.getAttribute("data-severity") === sev.value);
      row.hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = String(n);
    document.body.setAttribute("data-shown", String(n));
    if (updateHash) {
      var p = new URLSearchParams();
      if (q.value) { p.set("q", q.value); }
      if (kind.value) { p.set("kind", kind.value); }
      if (sev.value) { p.set("severity", sev.value); }
      try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* file: URLs */ }
    }
  }
  function fromHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (!p.has("q") && !p.has("kind") && !p.has("severity")) {
      if (location.hash.length > 1 && document.getElementById(location.hash.slice(1))) { return; }  // an in-page link
    }
    q.value = p.get("q") || "";
    kind.value = p.get("kind") || "";
    sev.value = p.get("severity") || "";
    apply(false);
  }
  [q, kind, sev].forEach(function (el) {
    el.addEventListener(el === q ? "input" : "change", function () { apply(true); });
  });
  window.addEventListener("hashchange", fromHash);
  document.getElementById("filters").hidden = false;
  fromHash();
  if (!document.body.hasAttribute("data-shown")) { apply(false); }
  document.body.setAttribute("data-js", "ready");
})();
