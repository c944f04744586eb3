// The operator page: everything arrives over one EventSource (/api/events); no CDN, no framework.
// "STATION DOWN" is decided here, from the time the last heartbeat reached this browser, so it
// also shows when the page server itself is gone (the feed drops and nothing arrives).
"use strict";
(function () {
  const DOWN_AFTER_MS = 3000, FEED_MAX = 200, GALLERY_MAX = 12;
  const $ = (id) => document.getElementById(id);
  const loadedAt = Date.now();
  let lastHb = null;          // Date.now() of the last heartbeat received (null: none yet)
  let everHb = false;
  const shown = new Set();    // seqs in the feed
  const gallerySeqs = new Set();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // the recorder's PNG when the part was recorded, else a JPEG of the station's memory
  function img(p, kind) {
    return "api/parts/" + encodeURIComponent(p.part_id) + "/" + kind + "." + (p.image || "png");
  }
  function localTime(ts) {
    const d = new Date(ts);
    return isNaN(d) ? "" : d.toLocaleTimeString([], {hour12: false});
  }
  function fmtMs(v) { return typeof v === "number" ? v.toFixed(1) + " ms" : "–"; }
  function fmtBytes(b) {
    if (typeof b !== "number") return "–";
    const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return b.toFixed(1) + " " + u[i];
  }
  function figures(j) {
    const skip = new Set(["verdict", "reason", "defects"]);
    const parts = [];
    for (const [k, v] of Object.entries(j)) {
      if (skip.has(k) || v === null) continue;
      parts.push(k + " " + (typeof v === "number" ? +v.toFixed(4) : v));
    }
    parts.unshift(j.defects + " defect cell(s)");
    if (j.reason) parts.push("reason " + j.reason);
    return parts.join(" · ");
  }
  function setImage(node, src) {
    node.hidden = false;
    node.onerror = () => { node.hidden = true; };
    node.src = src;
  }

  function showLatest(p) {
    const v = $("latest-verdict");
    v.textContent = p.verdict || "?";
    v.className = "verdict " + (p.verdict || "none");
    $("latest-part-id").textContent = p.part_id;
    $("latest-time").textContent = localTime(p.ts);
    $("latest-seq").textContent = p.seq;
    $("latest-latency").textContent = fmtMs(p.latency_ms);
    $("latest-reason").textContent = p.reason || "";
    setImage($("latest-overlay"), img(p, "overlay"));
    setImage($("latest-frame"), img(p, "frame"));
    const tb = $("latest-judges"); tb.replaceChildren();
    for (const [name, j] of Object.entries(p.judges || {})) {
      const tr = el("tr");
      tr.append(el("td", null, name), el("td", "badge-cell", j.verdict), el("td", null, figures(j)));
      tb.append(tr);
    }
    const d = $("latest-defects");
    d.textContent = (p.defects || []).map((x) => x.address + " (" + x.judge + " " +
      (typeof x.score === "number" ? x.score.toFixed(2) : x.score) + ")").join("; ");
  }

  function addFeed(p) {
    const li = el("li");
    li.dataset.seq = p.seq;
    li.append(el("span", "t", localTime(p.ts)), el("span", "badge " + p.verdict, p.verdict),
              el("span", "pid", p.part_id));
    const what = p.verdict === "error" ? (p.reason || "") :
      (p.defects || []).map((x) => x.address).join("; ");
    const lat = p.latency_ms != null ? fmtMs(p.latency_ms) : "";
    li.append(el("span", "what", [what, lat].filter((x) => x).join("  ·  ")));
    const feed = $("feed");
    // newest first by seq (catch-up may deliver an older part after a newer one)
    let before = null;
    for (const c of feed.children) { if (+c.dataset.seq < p.seq) { before = c; break; } }
    feed.insertBefore(li, before);
    while (feed.children.length > FEED_MAX) {
      shown.delete(+feed.lastElementChild.dataset.seq);  // a shift-long page stays small
      feed.lastElementChild.remove();
    }
  }

  function addGallery(p) {
    if (p.verdict !== "defect" || gallerySeqs.has(p.seq)) return;
    gallerySeqs.add(p.seq);
    const fig = el("figure");
    fig.dataset.seq = p.seq;
    const im = el("img"); im.alt = "overlay of " + p.part_id; im.loading = "lazy";
    setImage(im, img(p, "overlay"));
    fig.append(im, el("figcaption", null, p.part_id + " — " +
      (p.defects || []).map((x) => x.address).join("; ")));
    const g = $("gallery");
    let before = null;
    for (const c of g.children) { if (+c.dataset.seq < p.seq) { before = c; break; } }
    g.insertBefore(fig, before);
    while (g.children.length > GALLERY_MAX) {
      gallerySeqs.delete(+g.lastElementChild.dataset.seq);
      g.lastElementChild.remove();
    }
  }

  let latestSeq = -1;
  function onPart(p) {
    if (shown.has(p.seq)) return;
    shown.add(p.seq);
    addFeed(p);
    addGallery(p);
    if (p.seq > latestSeq) { latestSeq = p.seq; showLatest(p); }
  }

  function yieldOf(c) {
    const n = c.pass + c.defect + c.error;
    return n ? (100 * c.pass / n).toFixed(1) + " %" : "–";
  }
  function showStatus(s) {
    $("station-name").textContent = s.station || "station";
    const st = $("state");
    st.textContent = s.station_state || "unknown";
    st.className = "pill " + (s.station_state || "");
    $("last-seq").textContent = s.station_last_seq != null ? s.station_last_seq : "–";
    $("queued").textContent = s.queued != null ? s.queued : "–";
    for (const k of ["pass", "defect", "error"]) {
      $("hour-" + k).textContent = s.hour[k]; $("shift-" + k).textContent = s.shift[k];
    }
    $("hour-yield").textContent = yieldOf(s.hour); $("shift-yield").textContent = yieldOf(s.shift);
    $("shift-start").textContent = s.shift.start ? "since " + localTime(s.shift.start) : "";
    const hours = $("hours"); hours.replaceChildren();
    const max = Math.max(1, ...s.hours.map((h) => h.pass + h.defect + h.error));
    for (const h of s.hours.slice(-12)) {
      const n = h.pass + h.defect + h.error, bar = el("div"), bad = el("i");
      bar.style.height = (100 * n / max) + "%";
      bad.style.height = n ? (100 * (h.defect + h.error) / n) + "%" : "0";
      bar.title = localTime(h.hour) + ": " + h.pass + " pass, " + h.defect + " defect, " + h.error + " error";
      bar.append(bad); hours.append(bar);
    }
    showHeat(s.heat);
    const cam = s.camera || {}, model = s.model || {}, disk = s.disk || {}, rec = s.recorder;
    health("h-camera", cam.up, cam.up ? "up" : "DOWN", cam.reason);
    health("h-model", model.ok, model.ok ? "ok" : "DEGRADED",
           (model.recipe ? "recipe " + model.recipe : "") + (model.name ? " · " + model.name : ""));
    health("h-disk", disk.ok, disk.ok ? "ok" : (disk.reason || "problem"),
           fmtBytes(disk.free_bytes) + " free");
    if (rec) health("h-recorder", rec.ok, rec.ok ? "ok" : "FAILING",
                    rec.written + " written, " + rec.dropped + " dropped, " + rec.failures + " failed");
    else health("h-recorder", true, "off", "images from memory");
    const nl = $("notices"); nl.replaceChildren();
    for (const n of (s.notices || []).slice(-3)) nl.append(el("li", null, n.message));
  }
  function health(id, ok, word, detail) {
    const dd = $(id); dd.replaceChildren();
    dd.append(el("span", ok ? "ok" : "bad", word), document.createTextNode(detail ? "  " + detail : ""));
  }
  function showHeat(h) {
    const t = $("heat"); t.replaceChildren();
    if (!h || !h.columns.length) { t.append(el("caption", "small", "no grid seen yet")); return; }
    const max = Math.max(1, ...Object.values(h.counts));
    const head = el("tr"); head.append(el("th", null, ""));
    for (const c of h.columns) head.append(el("th", null, c));
    t.append(head);
    for (const r of h.rows) {
      const tr = el("tr"); tr.append(el("th", null, r));
      for (const c of h.columns) {
        const addr = "X:" + c + ", Y:" + r, n = h.counts[addr] || 0, td = el("td", null, n || "");
        td.title = addr + ": " + n + " defect(s)";
        if (n) td.style.background = "rgba(220, 38, 38, " + (0.25 + 0.75 * n / max).toFixed(2) + ")";
        tr.append(td);
      }
      t.append(tr);
    }
  }

  function checkDown() {
    const now = Date.now();
    const ref = lastHb !== null ? lastHb : (everHb ? 0 : loadedAt);
    const age = (now - ref) / 1000;
    $("hb-age").textContent = lastHb !== null ? age.toFixed(1) + " s" : "–";
    $("h-heartbeat").textContent = lastHb !== null ? age.toFixed(1) + " s ago" : "none yet";
    const down = now - ref > DOWN_AFTER_MS;
    const banner = $("down-banner");
    if (down) {
      $("down-detail").textContent = lastHb !== null ?
        "no heartbeat for " + age.toFixed(0) + " s — reject every part" :
        "no heartbeat from the station — reject every part";
      $("state").textContent = "DOWN"; $("state").className = "pill down";
    }
    if (down && banner.hidden) {  // when it went down, and why (for tests and diagnosis)
      document.body.dataset.downAt = String(now);
      document.body.dataset.lastHeartbeatAt = String(lastHb !== null ? lastHb : "");
    }
    banner.hidden = !down;
    document.body.classList.toggle("is-down", down);
  }

  function connect() {
    const es = new EventSource("api/events?backlog=50");
    es.addEventListener("snapshot", (e) => {
      const s = JSON.parse(e.data);
      if (s.heartbeat_age_s !== null && s.heartbeat_age_s !== undefined) {
        lastHb = Date.now() - s.heartbeat_age_s * 1000; everHb = true;
      }
      showStatus(s);
      if (s.latest && s.latest.seq > latestSeq) { latestSeq = s.latest.seq; showLatest(s.latest); }
    });
    es.addEventListener("heartbeat", (e) => {
      lastHb = Date.now(); everHb = true; showStatus(JSON.parse(e.data)); checkDown();
    });
    es.addEventListener("state", (e) => showStatus(JSON.parse(e.data)));
    es.addEventListener("part", (e) => onPart(JSON.parse(e.data)));
    // EventSource reconnects by itself with Last-Event-ID (the last part's seq): the server
    // sends what was missed.  Nothing here resets the heartbeat clock.
  }

  fetch("api/parts?verdict=defect&limit=" + GALLERY_MAX).then((r) => r.json()).then((d) => {
    for (const p of d.parts.slice().reverse()) addGallery(p);
  }).catch(() => {});
  connect();
  setInterval(checkDown, 200);
  checkDown();
})();
