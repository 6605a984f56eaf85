// The slice viewers' picture, drawn in the browser: every slice of the plane arrives once as a
// PNG, and the slider, the arrow keys and the mouse wheel swap pictures without a round trip to
// the server. Markers (SVG, with their hover text) and orientation letters are drawn over it.
// data: {build, memory, jump, start, count, width, height, maxHeight, edges, panels: [{title,
// pictures, markers: [{first, last, x, y, text, label, color, symbol}]}]}

const SVG = "http://www.w3.org/2000/svg";
// The slice each viewer shows, kept across reruns of the page (a new window or slab keeps the
// slice); a jump from the server (a new `jump` number) or another series starts it again.
const positions = (window.__sliceStackPositions ??= {});

function element(tag, attributes = {}, parent = null, namespace = null) {
  const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (parent) parent.appendChild(node);
  return node;
}

function marker(svg, point, size) {
  const group = element("g", { class: "marker", "data-first": point.first, "data-last": point.last }, svg, SVG);
  element("title", {}, group, SVG).textContent = point.text;
  const [cx, cy, r] = [point.x + 0.5, point.y + 0.5, size];
  const style = { fill: "none", stroke: point.color, "stroke-width": 2.5, "vector-effect": "non-scaling-stroke" };
  if (point.symbol === "square") {
    element("rect", { x: cx - r, y: cy - r, width: 2 * r, height: 2 * r, ...style }, group, SVG);
  } else {
    element("circle", { cx, cy, r, ...style }, group, SVG);
  }
  if (point.label) {
    const label = element("text", { x: cx + r + 1, y: cy - r, fill: point.color, class: "label", "font-size": size * 1.3 }, group, SVG);
    label.textContent = point.label;
  }
}

function letters(svg, edges, width, height) {
  const places = {
    top: [width / 2, 1, "middle", "hanging"], bottom: [width / 2, height - 1, "middle", "auto"],
    left: [1, height / 2, "start", "middle"], right: [width - 1, height / 2, "end", "middle"],
  };
  for (const [edge, letter] of Object.entries(edges)) {
    const [x, y, anchor, baseline] = places[edge];
    const text = element("text", { x, y, "text-anchor": anchor, "dominant-baseline": baseline, class: "edge", "font-size": Math.max(width, height) / 30 }, svg, SVG);
    text.textContent = letter;
  }
}

function build(root, data) {
  root.replaceChildren();
  root.dataset.build = data.build;
  const panels = element("div", { class: "panels" }, root);
  const size = Math.max(data.width, data.height) / 40 + 2;
  const views = data.panels.map((panel) => {
    const box = element("div", { class: "panel" }, panels);
    const title = element("div", { class: "title", "data-testid": "slice-title" }, box);
    const frame = element("div", { class: "frame" }, box);
    frame.style.aspectRatio = `${data.width} / ${data.height}`;
    frame.style.maxWidth = `${(data.maxHeight * data.width) / data.height}px`;
    const picture = element("img", { alt: panel.title, draggable: "false" }, frame);
    const svg = element("svg", { viewBox: `0 0 ${data.width} ${data.height}`, preserveAspectRatio: "none" }, frame, SVG);
    panel.markers.forEach((point) => marker(svg, point, size));
    letters(svg, data.edges, data.width, data.height);
    return { panel, title, picture, markers: [...svg.querySelectorAll(".marker")] };
  });
  const slider = element("input", { type: "range", min: 1, max: data.count, step: 1, "aria-label": "Slice" }, root);
  return { views, slider };
}

export default function (component) {
  const { data, parentElement } = component;
  const root = parentElement.querySelector(".slice-stack");
  if (!root || !data) return;
  if (!root.__stack || root.dataset.build !== data.build) root.__stack = build(root, data);
  const { views, slider } = root.__stack;
  let state = positions[data.memory];
  if (!state || state.jump !== data.jump) state = positions[data.memory] = { index: data.start, jump: data.jump };
  const show = (index) => {
    state.index = Math.min(Math.max(index, 0), data.count - 1);
    slider.value = state.index + 1;
    for (const view of views) {
      view.picture.src = view.panel.pictures[state.index];
      view.title.textContent = `${view.panel.title} ${state.index + 1}/${data.count}`;
      for (const point of view.markers) {
        const seen = Number(point.dataset.first) <= state.index && state.index <= Number(point.dataset.last);
        point.style.display = seen ? "" : "none";
      }
    }
  };
  slider.oninput = () => show(Number(slider.value) - 1);
  root.onwheel = (event) => {
    if (!event.target.closest(".frame")) return;
    event.preventDefault();
    show(state.index + (event.deltaY > 0 ? 1 : -1));
  };
  show(state.index);
}
