// The IRIS WebSocket tutorial's chat client (ChatClient.csp), without jQuery.
// Wire shapes are the tutorial's; its defects are fixed (docs/differences.md):
// UTF-8-safe base64, everything shown is escaped (textContent), onerror works.
// Added: the page reconnects by itself (1 s doubling to 30 s, with jitter), asks for
// what it missed (?since=<the last message Id it shows>), shows each message once,
// tells the server its alias again, and sends again each line it has not yet seen come
// back (its gateway may have died with it): every line carries a random Cid, and the
// server stores a Cid once.
"use strict";

(function () {
  var ws = null;
  var alias = "unknown";
  var aliasSet = false;
  var lastId = 0; // the Id of the last chat message shown
  var attempt = 0; // reconnections tried since the socket was last open
  var pending = []; // aliases typed while disconnected, sent once connected again
  var unconfirmed = []; // [Cid, JSON] of the lines sent and not yet seen come back
  var RETRY_FIRST_S = 1;
  var RETRY_MAX_S = 30;

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
    var params = new URLSearchParams(window.location.search);
    if (lastId > 0) {
      params.set("since", String(lastId));
    }
    var query = params.toString();
    return scheme + "//" + window.location.host + "/csp/user/Chat.Server.cls" +
      (query ? "?" + query : "");
  }

  function onmessage(event) {
    var d;
    try {
      d = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    if (d.Type === "Chat") {
      forget(d.Cid);
      if (typeof d.Id === "number") {
        if (d.Id <= lastId) {
          return; // shown already (it came again after a reconnection)
        }
        lastId = d.Id;
      }
      byId("chat").appendChild(wrapmessage(d));
      var chatdiv = byId("chatdiv");
      chatdiv.scrollTo({ top: chatdiv.scrollHeight, behavior: "smooth" });
    } else if (d.Type === "userlist") {
      var list = byId("userlist");
      list.replaceChildren(wrapuser(d.Users));
    } else if (d.Type === "Status") {
      setHeadline("CHAT - connected - " + d.WSID);
      attempt = 0;
      if (aliasSet) {
        ws.send(JSON.stringify({ User: alias })); // a new socket: the list needs us again
      }
      while (pending.length > 0) {
        ws.send(pending.shift());
      }
      // Sent before, not seen since: maybe lost with the old socket, maybe stored
      // (then the server keeps its Cid once, and ?since= brings it back).
      unconfirmed.forEach(function (entry) {
        ws.send(entry[1]);
      });
    } else if (d.Type === "Error") {
      forget(d.Cid); // refused: the notice says so; it is not sent again
      byId("notice").textContent = String(d.Message);
    }
  }

  function forget(cid) {
    unconfirmed = unconfirmed.filter(function (entry) {
      return entry[0] !== cid;
    });
  }

  function newCid() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) {
      return (b < 16 ? "0" : "") + b.toString(16);
    }).join("");
  }

  function transmit(text) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(text);
    } else {
      pending.push(text);
    }
  }

  function send() {
    var input = byId("inputline");
    var line = input.value;
    input.value = "";
    if (line.substr(0, 6) === "alias ") {
      alias = line.substr(6).trim() || "default";
      aliasSet = true;
      transmit(JSON.stringify({ User: alias }));
      return;
    }
    if (line !== "") {
      var cid = newCid();
      var text = JSON.stringify({ Message: encodeText(line), Author: alias, Cid: cid });
      unconfirmed.push([cid, text]);
      if (ws && ws.readyState === WebSocket.OPEN) {
        ws.send(text); // else the next Status sends it with the other unconfirmed ones
      }
    }
  }

  // 1 s, 2 s, 4 s ... up to 30 s, each drawn between half and all of it, so that many
  // pages that lost one gateway do not come back all at once.
  function retryDelayMs() {
    var bound = Math.min(RETRY_MAX_S, RETRY_FIRST_S * Math.pow(2, attempt));
    attempt += 1;
    return 1000 * bound * (0.5 + Math.random() / 2);
  }

  function connect() {
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
      setHeadline("CHAT - reconnecting");
      window.setTimeout(connect, retryDelayMs());
    };
  }

  function init() {
    connect();
    byId("inputline").addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        send();
      }
    });
    byId("sendbutton").addEventListener("click", send);
  }

  window.addEventListener("load", init);
})();
