// The door screen, live: one JSON view per change from /events, and the newest camera picture.
(function () {
  "use strict";
  var main = document.getElementById("door");
  var doorState = document.getElementById("door-state");
  var message = document.getElementById("message");
  var link = document.getElementById("link");
  var camera = document.getElementById("camera");

  function render(v) {
    main.dataset.door = v.door;
    doorState.textContent = v.door_text;
    var m = v.message;
    message.textContent = m ? m.text : "";
    message.dataset.prompt = m ? m.prompt : "";
    message.className = "message" + (m ? " tone-" + m.tone + " kind-" + m.kind : "");
    link.textContent = v.link.text || "";
    link.hidden = !v.link.text;
    link.dataset.offline = v.link.offline ? "yes" : "no";
  }

  var events = new EventSource("/events");
  events.onmessage = function (e) { render(JSON.parse(e.data)); main.dataset.live = "yes"; };
  events.onerror = function () { main.dataset.live = "no"; };  // EventSource reconnects by itself

  // The newest picture, one after the other (about 10 a second at most).
  function next(delay) {
    setTimeout(function () { camera.src = "/camera.jpg?t=" + Date.now(); }, delay);
  }
  camera.addEventListener("load", function () { camera.classList.remove("none"); next(100); });
  camera.addEventListener("error", function () { camera.classList.add("none"); next(500); });
})();
