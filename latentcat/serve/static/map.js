// latentcat explorer: the map under the mouse. Without this script the page still works
// (buttons pan and zoom, a click opens a source); with it:
//   wheel          zoom in or out around the cursor
//   drag           pan
//   shift + drag   select the sources in a box: opens /selection (list, downloads, "more like these")
//   alt + drag     draw a lasso around sources: opens /selection with its corners
//                  (the buttons above the map make a plain drag select a box or draw a lasso too)
//   hover          name the source nearest the cursor (GET /api/nearest), with its thumbnail
// A view is four numbers x0,x1,y0,y1 in map units; pixel rows count down from the top, as on
// the server (latentcat/serve/mapview.py, View.data_at and View.pixel_of).
"use strict";

(function () {
  const box = document.getElementById("mapbox");
  if (!box) return;
  const image = box.querySelector("input.map");
  const form = document.getElementById("mapform");
  if (!image || !form) return;
  let view = box.dataset.view.split(",").map(Number);
  const W = image.width, H = image.height;

  const dataAt = (px, py) => [view[0] + (px + 0.5) / W * (view[1] - view[0]),
                              view[3] - (py + 0.5) / H * (view[3] - view[2])];
  const param = (v) => v.map((x) => x.toPrecision(6)).join(",");
  const local = (event) => {
    const r = image.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  };

  // show a new view: a new image, the form's and the address's view, links named on the server gone
  function show(next) {
    view = next;
    const url = new URL(image.src, document.baseURI);
    url.searchParams.set("view", param(view));
    image.src = url.pathname + url.search;
    const field = form.querySelector('input[name="view"]');
    if (field) field.value = param(view);
    const here = new URL(window.location.href);
    here.searchParams.set("view", param(view));
    window.history.replaceState(null, "", here.pathname + here.search);
    box.querySelectorAll("a.point").forEach((a) => a.remove());
    box.dataset.view = param(view);
  }

  box.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px, py] = local(event);
    const [cx, cy] = dataAt(px, py);
    const f = event.deltaY < 0 ? 1 / 1.5 : 1.5;  // the window's size factor
    show([cx - (cx - view[0]) * f, cx + (view[1] - cx) * f, cy - (cy - view[2]) * f, cy + (view[3] - cy) * f]);
  }, { passive: false });

  // what a plain drag does: pan, box or lasso (buttons made here: without the script there is no drag)
  let tool = "pan";
  const tools = document.createElement("div");
  tools.className = "tools";
  tools.id = "maptools";
  for (const [value, label] of [["pan", "drag pans"], ["box", "drag selects a box"], ["lasso", "drag draws a lasso"]]) {
    const choice = document.createElement("label");
    const radio = document.createElement("input");
    Object.assign(radio, { type: "radio", name: "maptool", value: value, checked: value === tool });
    radio.addEventListener("change", () => { tool = value; });
    choice.append(radio, " " + label + " ");
    tools.append(choice);
  }
  box.parentNode.insertBefore(tools, box);

  const SVG = "http://www.w3.org/2000/svg";
  const MAX_CORNERS = 100;  // the server takes up to 200
  let start = null, moved = false, rect = null, lasso = null, trace = [];
  let waiting = null, asked = 0;  // the hover name: its timer, and the number of the last request
  box.addEventListener("mousedown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    clearTimeout(waiting);
    asked++;  // a name asked for before the press is not shown
    const named = document.getElementById("maptip");
    if (named) named.hidden = true;  // no name over a drag or a box
    const mode = event.shiftKey ? "box" : event.altKey ? "lasso" : tool;
    start = { at: local(event), mode: mode };
    moved = false;
    if (mode === "box") {
      rect = document.createElement("div");
      rect.className = "box";
      box.appendChild(rect);
    } else if (mode === "lasso") {
      lasso = document.createElementNS(SVG, "svg");
      lasso.setAttribute("class", "lasso");
      lasso.setAttribute("width", W);
      lasso.setAttribute("height", H);
      lasso.appendChild(document.createElementNS(SVG, "polygon"));
      box.appendChild(lasso);
      trace = [start.at];
    }
  });
  window.addEventListener("mousemove", (event) => {
    if (!start) return;
    const [px, py] = local(event);
    const [x0, y0] = start.at;
    if (Math.abs(px - x0) + Math.abs(py - y0) > 3) moved = true;
    if (rect) {
      Object.assign(rect.style, { left: Math.min(px, x0) + "px", top: Math.min(py, y0) + "px",
                                  width: Math.abs(px - x0) + "px", height: Math.abs(py - y0) + "px" });
    } else if (lasso) {
      trace.push([px, py]);
      lasso.firstChild.setAttribute("points", trace.map((p) => p.join(",")).join(" "));
    } else if (moved) {
      image.style.transform = `translate(${px - x0}px, ${py - y0}px)`;
    }
  });
  window.addEventListener("mouseup", (event) => {
    if (!start) return;
    const [px, py] = local(event);
    const [x0, y0] = start.at;
    const mode = start.mode;
    start = null;
    image.style.transform = "";
    if (rect) { rect.remove(); rect = null; }
    if (lasso) { lasso.remove(); lasso = null; }
    if (!moved) return;  // a plain click: the form's own (open, zoom or centre), with its position
    if (mode === "box") {
      const [ax, ay] = dataAt(Math.min(px, x0), Math.max(py, y0));
      const [bx, by] = dataAt(Math.max(px, x0), Math.min(py, y0));
      if (bx > ax && by > ay) window.location.assign("/selection?box=" + param([ax, bx, ay, by]));
      return;
    }
    if (mode === "lasso") {
      const step = Math.ceil(trace.length / MAX_CORNERS);
      const corners = trace.filter((_, i) => i % step === 0).map(([x, y]) => dataAt(x, y));
      if (corners.length >= 3) window.location.assign("/selection?lasso=" + param(corners.flat()));
      return;
    }
    const dx = (px - x0) / W * (view[1] - view[0]), dy = (py - y0) / H * (view[3] - view[2]);
    show([view[0] - dx, view[1] - dx, view[2] + dy, view[3] + dy]);
  });
  // the form's submit on a click is ours to make (a drag must not open a source)
  image.addEventListener("click", (event) => { if (moved) event.preventDefault(); });

  const tip = document.createElement("div");
  tip.className = "tip";
  tip.id = "maptip";
  tip.hidden = true;
  box.appendChild(tip);
  box.addEventListener("mousemove", (event) => {
    if (start) return;
    const [px, py] = local(event);
    clearTimeout(waiting);
    waiting = setTimeout(async () => {
      const ask = ++asked;
      const url = `/api/nearest?view=${param(view)}&px=${px.toFixed(1)}&py=${py.toFixed(1)}`;
      const found = await (await fetch(url)).json();
      if (ask !== asked || start) return;
      if (!found.source_id) { tip.hidden = true; return; }
      tip.replaceChildren();
      const name = document.createElement("div");
      const period = found.period == null ? "" : ` · P ${Number(found.period).toPrecision(4)} d`;
      const g = found.g == null ? "" : ` · G ${Number(found.g).toFixed(2)}`;
      name.textContent = `${found.source_id} · ${found.class || "no class"}${period}${g}`;
      const thumb = document.createElement("img");
      thumb.src = found.thumb;
      thumb.width = 240;
      tip.append(name, thumb);
      tip.style.left = Math.min(px + 14, W - 250) + "px";
      tip.style.top = Math.min(py + 14, H - 90) + "px";
      tip.hidden = false;
      tip.dataset.sourceId = found.source_id;
    }, 120);
  });
  box.addEventListener("mouseleave", () => { clearTimeout(waiting); tip.hidden = true; });
})();
