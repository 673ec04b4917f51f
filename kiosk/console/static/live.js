// Today's check-ins as they arrive: poll the JSON feed and put new rows on top. The page works without it.
(function () {
  var table = document.getElementById("today");
  if (!table || !window.fetch) return;
  var after = table.getAttribute("data-after");
  var feed = table.getAttribute("data-feed");
  document.getElementById("live").hidden = false;
  function cell(tr, text, href) {
    var td = document.createElement("td");
    if (href) { var a = document.createElement("a"); a.href = href; a.textContent = text; td.appendChild(a); }
    else td.textContent = text;
    tr.appendChild(td);
  }
  function poll() {
    fetch(feed + "?after=" + encodeURIComponent(after), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (rows) {
        var body = table.tBodies[0];
        rows.slice().reverse().forEach(function (e) {
          var none = body.querySelector("tr.none");
          if (none) none.remove();
          var tr = document.createElement("tr");
          tr.className = "new";
          cell(tr, e.time); cell(tr, e.name);
          if (e.resident) cell(tr, e.resident, "/residents/" + encodeURIComponent(e.resident) + "/history");
          else cell(tr, "\u2014");
          cell(tr, e.door); cell(tr, e.method);
          body.insertBefore(tr, body.firstChild);
          if (e.t > after) after = e.t;
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
