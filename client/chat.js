// The IRIS WebSocket tutorial's chat client (ChatClient.csp), without jQuery.
// Wire shapes are the tutorial's; its defects are fixed (docs/differences.md):
// UTF-8-safe base64, everything shown is escaped (textContent), onerror works.
"use strict";

(function () {
  var ws = null;
  var alias = "unknown";

  function byId(id) {
    return document.getElementById(id);
  }

  function setHeadline(text) {
    byId("headline").textContent = text;
  }

  // btoa()/atob() take Latin-1 only; go through UTF-8 bytes so any text survives.
  function encodeText(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary);
  }

  function decodeText(base64) {
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return new TextDecoder().decode(bytes);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  // <li class="media"><div class="media-body"><div class="media"><p>Author</p>
  // <div class="media-body">text<br><small class="text-muted">Sent</small><hr></div>
  function wrapmessage(d) {
    var text;
    try {
      text = decodeText(d.Message || "");
    } catch (e) {
      text = "(unreadable message)";
    }
    var li = element("li", "media");
    var outer = element("div", "media-body");
    var media = element("div", "media");
    media.appendChild(element("p", "", d.Author === undefined ? "" : String(d.Author)));
    var body = element("div", "media-body");
    body.appendChild(document.createTextNode(text));
    body.appendChild(document.createElement("br"));
    body.appendChild(element("small", "text-muted", d.Sent === undefined ? "" : String(d.Sent)));
    body.appendChild(document.createElement("hr"));
    media.appendChild(body);
    outer.appendChild(media);
    li.appendChild(outer);
    return li;
  }

  function wrapuser(users) {
    var fragment = document.createDocumentFragment();
    (users || []).forEach(function (user) {
      var li = element("li", "media");
      var body = element("div", "media-body");
      body.appendChild(element("p", "", String(user.User)));
      li.appendChild(body);
      fragment.appendChild(li);
    });
    return fragment;
  }

  function socketUrl() {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + "/csp/user/Chat.Server.cls" +
      window.location.search;
  }

  function onmessage(event) {
    var d;
    try {
      d = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (d.Type === "Chat") {
      byId("chat").appendChild(wrapmessage(d));
      var chatdiv = byId("chatdiv");
      chatdiv.scrollTo({ top: chatdiv.scrollHeight, behavior: "smooth" });
    } else if (d.Type === "userlist") {
      var list = byId("userlist");
      list.replaceChildren(wrapuser(d.Users));
    } else if (d.Type === "Status") {
      setHeadline("CHAT - connected - " + d.WSID);
    } else if (d.Type === "Error") {
      byId("notice").textContent = String(d.Message);
    }
  }

  function send() {
    var input = byId("inputline");
    var line = input.value;
    input.value = "";
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return;
    }
    if (line.substr(0, 6) === "alias ") {
      alias = line.substr(6).trim() || "default";
      ws.send(JSON.stringify({ User: alias }));
      return;
    }
    if (line !== "") {
      ws.send(JSON.stringify({ Message: encodeText(line), Author: alias }));
    }
  }

  function init() {
    ws = new WebSocket(socketUrl());
    ws.onopen = function () {
      setHeadline("CHAT - connected");
    };
    ws.onmessage = onmessage;
    ws.onerror = function () {
      setHeadline("CHAT - error");
      byId("notice").textContent = "Received error";
    };
    ws.onclose = function () {
      ws = null;
      setHeadline("CHAT - disconnected");
    };
    byId("inputline").addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        send();
      }
    });
    byId("sendbutton").addEventListener("click", send);
  }

  window.addEventListener("load", init);
})();
