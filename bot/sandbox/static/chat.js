// SignalDesk sandbox chat page. Vanilla JS, no dependencies, works offline.
//
// Safety: the page never parses HTML. The sandbox sends each message as plain text plus
// Telegram MessageEntity objects (offsets in UTF-16 code units, which is what JS strings
// index), and the page builds DOM nodes from them with textContent; links are limited to
// http(s)/tg/mailto/ton. Nothing here uses innerHTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    chat: $("chat"),
    messages: $("messages"),
    empty: $("empty"),
    input: $("input"),
    form: $("composer"),
    send: $("send-btn"),
    menuBtn: $("menu-btn"),
    menu: $("commands-menu"),
    conn: $("conn"),
    botName: $("bot-name"),
    botStatus: $("bot-status"),
    avatar: $("bot-avatar"),
    toast: $("toast"),
    alert: $("alert"),
    alertTitle: $("alert-title"),
    alertText: $("alert-text"),
    alertOk: $("alert-ok"),
  };

  const state = {
    revision: 0,
    messages: new Map(), // message_id -> message JSON
    nodes: new Map(), // message_id -> DOM node
    pending: new Map(), // callback_id -> button element
    commands: [],
    bot: null,
    online: null,
  };

  const SAFE_URL = /^(https?:|tg:|mailto:|ton:)/i;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // ---- entities -> DOM ------------------------------------------------------------------

  function elementFor(entity, text) {
    switch (entity.type) {
      case "bold": return el("strong");
      case "italic": return el("em");
      case "underline": return el("u");
      case "strikethrough": return el("s");
      case "code": return el("code");
      case "pre": {
        const pre = el("pre");
        if (entity.language) pre.dataset.language = String(entity.language);
        return pre;
      }
      case "blockquote": return el("blockquote");
      case "expandable_blockquote": return el("blockquote", "expandable");
      case "spoiler": {
        const span = el("span", "spoiler");
        span.title = "spoiler: click to reveal";
        span.addEventListener("click", () => span.classList.add("revealed"));
        return span;
      }
      case "text_link":
      case "url": {
        const href = entity.type === "url" ? text : String(entity.url || "");
        if (!SAFE_URL.test(href)) return el("span");
        const a = el("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        a.title = href;
        return a;
      }
      case "bot_command": {
        const span = el("span", "command");
        span.addEventListener("click", () => sendText(text.split("@")[0]));
        return span;
      }
      default: return el("span", "entity-" + String(entity.type).replace(/[^a-z_]/g, ""));
    }
  }

  function renderText(text, entities) {
    const root = el("div", "text");
    const list = (entities || [])
      .filter((e) => Number.isInteger(e.offset) && Number.isInteger(e.length) && e.length > 0)
      .sort((a, b) => a.offset - b.offset || b.length - a.length);

    function build(parent, start, end, items) {
      let pos = start;
      let i = 0;
      while (i < items.length) {
        const e = items[i];
        const s = Math.max(e.offset, pos);
        const t = Math.min(e.offset + e.length, end);
        if (s >= t) { i += 1; continue; }
        if (s > pos) parent.appendChild(document.createTextNode(text.slice(pos, s)));
        const node = elementFor(e, text.slice(s, t));
        const inner = [];
        let j = i + 1;
        while (j < items.length && items[j].offset < t) { inner.push(items[j]); j += 1; }
        build(node, s, t, inner);
        parent.appendChild(node);
        pos = t;
        i = j;
      }
      if (pos < end) parent.appendChild(document.createTextNode(text.slice(pos, end)));
    }
    build(root, 0, text.length, list);
    return root;
  }

  // ---- messages ---------------------------------------------------------------------------

  function timeOf(unix) {
    if (!unix) return "";
    const d = new Date(unix * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function dayOf(unix) {
    const d = new Date((unix || 0) * 1000);
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return "Today";
    return d.toLocaleDateString([], { day: "numeric", month: "long", year: "numeric" });
  }

  function renderMessage(m) {
    const row = el("div", "message " + (m.from_bot ? "in" : "out"));
    row.dataset.messageId = String(m.message_id);
    const hasButtons = m.keyboard && m.keyboard.length > 0;
    if (m.from_bot && m.had_buttons && !hasButtons) row.classList.add("settled");

    const bubble = el("div", "bubble");
    const meta = el("span", "meta");
    if (m.silent) meta.appendChild(el("span", "silent", "🔕"));
    if (m.edit_date) {
      const edited = el("span", "edited", "edited");
      edited.title = "edited at " + timeOf(m.edit_date);
      meta.appendChild(edited);
    }
    meta.appendChild(el("span", "time", timeOf(m.date)));
    if (m.photo_url) {
      const img = el("img", "photo");
      img.src = m.photo_url;
      img.alt = "chart";
      bubble.appendChild(img);
    }
    bubble.appendChild(renderText(m.text || "", m.entities));
    bubble.lastChild.appendChild(meta);
    row.appendChild(bubble);

    if (hasButtons) {
      const kb = el("div", "keyboard");
      for (const r of m.keyboard) {
        const line = el("div", "row");
        for (const b of r) {
          const btn = el("button", null, b.text);
          btn.type = "button";
          if (b.callback_data !== null && b.callback_data !== undefined) {
            btn.dataset.callbackData = b.callback_data;
            btn.addEventListener("click", () => press(m.message_id, b.callback_data, btn));
          } else if (b.url && SAFE_URL.test(b.url)) {
            btn.appendChild(el("span", "ext", "↗"));
            btn.title = b.url;
            btn.addEventListener("click", () => window.open(b.url, "_blank", "noopener,noreferrer"));
          } else {
            btn.disabled = true;
            btn.title = "not simulated in the sandbox";
          }
          line.appendChild(btn);
        }
        kb.appendChild(line);
      }
      row.appendChild(kb);
    }
    return row;
  }

  function nearBottom() {
    const c = els.chat;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 80;
  }

  function rebuildDays() {
    for (const d of els.messages.querySelectorAll(".day")) d.remove();
    let last = null;
    for (const node of els.messages.querySelectorAll(".message")) {
      const m = state.messages.get(Number(node.dataset.messageId));
      const day = dayOf(m && m.date);
      if (day !== last) {
        els.messages.insertBefore(el("div", "day", day), node);
        last = day;
      }
    }
  }

  function upsertMessage(m) {
    const old = state.nodes.get(m.message_id);
    if (m.deleted) {
      // Telegram clients drop deleted messages from the chat
      if (old) old.remove();
      state.nodes.delete(m.message_id);
      state.messages.delete(m.message_id);
      return;
    }
    const wasEdited = old && state.messages.get(m.message_id);
    state.messages.set(m.message_id, m);
    const node = renderMessage(m);
    if (old) {
      old.replaceWith(node);
      if (wasEdited) {
        node.classList.add("flash");
        setTimeout(() => node.classList.remove("flash"), 1000);
      }
    } else {
      // keep message_id order
      let before = null;
      for (const [id, n] of state.nodes) {
        if (id > m.message_id && (!before || id < Number(before.dataset.messageId))) before = n;
      }
      els.messages.insertBefore(node, before);
    }
    state.nodes.set(m.message_id, node);
  }

  // ---- notices ----------------------------------------------------------------------------

  let toastTimer = null;
  function toast(text) {
    els.toast.textContent = text;
    els.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { els.toast.hidden = true; }, 3000);
  }

  function alertBox(text) {
    els.alertTitle.textContent = (state.bot && state.bot.first_name) || "Bot";
    els.alertText.textContent = text;
    els.alert.hidden = false;
    els.alertOk.focus();
  }
  els.alertOk.addEventListener("click", () => { els.alert.hidden = true; els.input.focus(); });

  function applyNotice(n) {
    const btn = state.pending.get(n.callback_id);
    if (btn) {
      btn.classList.remove("loading");
      state.pending.delete(n.callback_id);
    }
    if (!n.text) return;
    if (n.show_alert) alertBox(n.text);
    else toast(n.text);
  }

  // ---- header / connection -----------------------------------------------------------------

  function setOnline(online) {
    if (state.online === online) return;
    state.online = online;
    els.conn.classList.toggle("online", online);
    els.conn.classList.toggle("offline", !online);
    els.conn.querySelector(".conn-text").textContent = online ? "sandbox online" : "reconnecting…";
  }

  function applyHeader(data) {
    state.bot = data.bot;
    if (data.bot) {
      els.botName.textContent = data.bot.first_name || "Bot";
      els.botStatus.textContent = data.bot.username ? "@" + data.bot.username + " · bot" : "bot";
      els.avatar.textContent = (data.bot.first_name || "B").slice(0, 1).toUpperCase();
      document.title = (data.bot.first_name || "Bot") + " · sandbox chat";
    }
    const noUser = !data.user || !data.chat;
    els.input.disabled = noUser;
    els.send.disabled = noUser;
    els.input.placeholder = noUser
      ? "The sandbox has no users yet"
      : "Message as " + data.user.first_name + (data.user.username ? " (@" + data.user.username + ")" : "");
    state.commands = Array.isArray(data.commands) ? data.commands : [];
  }

  // ---- polling ----------------------------------------------------------------------------

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function reset() {
    state.revision = 0;
    state.messages.clear();
    state.nodes.clear();
    els.messages.replaceChildren();
  }

  async function poll() {
    for (;;) {
      try {
        const resp = await fetch("/sandbox/api/updates?since=" + state.revision + "&timeout=20", {
          cache: "no-store",
        });
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        const data = await resp.json();
        setOnline(true);
        if (data.revision < state.revision) { reset(); continue; } // a new sandbox instance
        const stick = nearBottom();
        applyHeader(data);
        for (const m of data.messages) upsertMessage(m);
        if (data.messages.length) rebuildDays();
        for (const n of data.notices) applyNotice(n);
        els.empty.hidden = state.messages.size > 0;
        state.revision = data.revision;
        if (stick && data.messages.length) els.chat.scrollTop = els.chat.scrollHeight;
      } catch (err) {
        setOnline(false);
        await sleep(1000);
      }
    }
  }

  // ---- actions ----------------------------------------------------------------------------

  async function postJSON(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok || !data || !data.ok) {
      throw new Error((data && data.error) || "HTTP " + resp.status);
    }
    return data;
  }

  async function press(messageId, callbackData, btn) {
    if (btn.classList.contains("loading")) return;
    btn.classList.add("loading");
    try {
      const data = await postJSON("/sandbox/api/press", {
        message_id: messageId,
        callback_data: callbackData,
      });
      state.pending.set(data.callback_id, btn);
      setTimeout(() => {
        // Telegram clients stop the spinner when the bot never answers
        if (state.pending.get(data.callback_id) === btn) {
          btn.classList.remove("loading");
          state.pending.delete(data.callback_id);
        }
      }, 15000);
    } catch (err) {
      btn.classList.remove("loading");
      toast("Could not press: " + err.message);
    }
  }

  async function sendText(text) {
    const value = text.trim();
    if (!value) return;
    try {
      await postJSON("/sandbox/api/send", { text: value });
      els.chat.scrollTop = els.chat.scrollHeight;
    } catch (err) {
      toast("Could not send: " + err.message);
    }
  }

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = Math.min(els.input.scrollHeight, 140) + "px";
  }

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = els.input.value;
    els.input.value = "";
    autosize();
    hideMenu();
    sendText(text);
  });
  els.input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      els.form.requestSubmit();
    } else if (ev.key === "Escape") {
      hideMenu();
    }
  });
  els.input.addEventListener("input", () => {
    autosize();
    const v = els.input.value;
    if (v.startsWith("/") && !v.includes(" ")) showMenu(v.slice(1));
    else hideMenu();
  });

  function showMenu(filter) {
    const items = state.commands.filter((c) => c.command.startsWith(filter || ""));
    const children = items.map((c) => {
      const row = el("div", "cmd");
      row.appendChild(el("span", "c", "/" + c.command));
      row.appendChild(el("span", "d", c.description));
      row.addEventListener("click", () => {
        hideMenu();
        els.input.value = "";
        sendText("/" + c.command);
      });
      return row;
    });
    if (!children.length) {
      children.push(el("div", "none", state.commands.length ? "No matching command" : "The bot has not set any commands"));
    }
    els.menu.replaceChildren(...children);
    els.menu.hidden = false;
  }
  function hideMenu() { els.menu.hidden = true; }
  els.menuBtn.addEventListener("click", () => {
    if (els.menu.hidden) showMenu("");
    else hideMenu();
  });

  poll();
})();
