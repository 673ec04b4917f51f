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

  // Without the daemon (stopped, restarting) the door is out of service: say so after a few seconds.
  var lost = null;
  function daemonLost() {
    render({door: "out_of_service", door_text: main.dataset.lost, message: null,
            link: {offline: false, queued: 0, text: null}});
  }
  var events = new EventSource("/events");
  events.onmessage = function (e) {
    clearTimeout(lost);
    lost = null;
    render(JSON.parse(e.data));
    main.dataset.live = "yes";
  };
  events.onerror = function () {  // EventSource reconnects by itself
    main.dataset.live = "no";
    if (lost === null) { lost = setTimeout(daemonLost, 3000); }
  };

  // The newest picture, one after the other (about 10 a second at most).
  function next(delay) {
    setTimeout(function () { camera.src = "/camera.jpg?t=" + Date.now(); }, delay);
  }
  camera.addEventListener("load", function () { camera.classList.remove("none"); next(100); });
  camera.addEventListener("error", function () { camera.classList.add("none"); next(500); });
})();
