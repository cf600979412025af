"""The playground's page: plain HTML and JavaScript, no build step."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shortcut playground</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
.panels { display: flex; gap: 2em; }
.panel img { image-rendering: pixelated; width: 384px; border: 1px solid #ccc; }
label { margin-right: 1em; }
#error { color: #b00; }
</style></head>
<body>
<h2>shortcut playground <small id="what"></small></h2>
<div>
  <label>class <select id="class"><option value="all">all, in turn</option></select></label>
  <label>CFG <input id="cfg" type="number" value="1" step="0.5" min="0" max="20"></label>
  <label>seed <input id="seed" type="number" value="0" min="0"></label>
  <label>samples <input id="count" type="number" value="16" min="1"></label>
</div>
<p id="error"></p>
<div class="panels">
  <div class="panel">
    <label>steps <input id="slider-a" type="range" min="0" value="0">
      <b id="steps-a"></b></label>
    <div><img id="img-a" alt="samples A"></div><div><span id="ms-a"></span></div>
  </div>
  <div class="panel">
    <label>steps <input id="slider-b" type="range" min="0" value="0">
      <b id="steps-b"></b></label>
    <div><img id="img-b" alt="samples B"></div><div><span id="ms-b"></span></div>
  </div>
</div>
<script>
let steps = [1];
const $ = (id) => document.getElementById(id);
async function show(side) {
  const n = steps[$("slider-" + side).value];
  $("steps-" + side).textContent = n + (n === 1 ? " step" : " steps");
  const query = new URLSearchParams({steps: n, class: $("class").value, cfg: $("cfg").value,
    seed: $("seed").value, count: $("count").value});
  const answer = await fetch("/api/generate?" + query);
  const body = await answer.json();
  if (!answer.ok) { $("error").textContent = body.error; return; }
  $("error").textContent = "";
  $("img-" + side).src = body.image;
  $("ms-" + side).textContent = body.ms.toFixed(1) + " ms";
}
async function both() { await show("a"); await show("b"); }
(async () => {
  const info = await (await fetch("/api/info")).json();
  steps = info.steps;
  $("what").textContent = info.objective + ", " + info.backbone;
  for (const [i, name] of info.classes.entries()) {
    const option = document.createElement("option"); option.value = i;
    option.textContent = name; $("class").appendChild(option);
  }
  if (!info.classes.length) { $("class").disabled = true; $("cfg").disabled = true; }
  for (const side of ["a", "b"]) {
    $("slider-" + side).max = steps.length - 1;
    $("slider-" + side).addEventListener("input", () => show(side));
  }
  $("slider-b").value = steps.length - 1;
  for (const id of ["class", "cfg", "seed", "count"]) $(id).addEventListener("change", both);
  await both();
})();
</script>
</body></html>
"""
