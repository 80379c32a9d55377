/*
 * The live dashboard's page. It follows the run's telemetry over Server-Sent Events (/events: every
 * sppo.v1.TelemetryEvent as protobuf JSON, the history first, then live) and keeps its own view of the run from
 * them; charts are drawn with uPlot (served from node_modules by the dashboard). Protobuf JSON leaves out fields at
 * their default (0, "", false), writes 64-bit integers as strings and enums by name: read with `num()`.
 */
const STAGES = ["STAGE_GENERATE", "STAGE_COMPARE", "STAGE_TRAIN", "STAGE_EVALUATE"];
const STAGE_NAMES = { STAGE_GENERATE: "generate", STAGE_COMPARE: "compare", STAGE_TRAIN: "train", STAGE_EVALUATE: "evaluate", STAGE_SCORE: "score" };
const STAGE_COLORS = { STAGE_GENERATE: "#1f77b4", STAGE_COMPARE: "#ff7f0e", STAGE_TRAIN: "#2ca02c", STAGE_EVALUATE: "#9467bd" };
const JUDGED_SHOWN = 6;

const num = (v) => (v === undefined || v === null ? 0 : Number(v));
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, children = []) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "style") node.setAttribute("style", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const fixed = (v, digits) => (Number.isFinite(v) ? v.toFixed(digits) : "—");
/** Readable rates: 6 012 rather than 6.0e+3. */
const rate = (v) => (v >= 100 ? Math.round(v).toLocaleString("en-US").replace(/,/g, " ") : v.toFixed(1));

let state;
function reset() {
  state = {
    runId: "",
    plan: undefined,
    status: { state: "connecting", message: "" },
    iteration: 0,
    progress: new Map(), // iteration → Map(stage → StageProgress)
    tokens: new Map(), // iteration → Map(stage → tokens/s)
    steps: [], // { iteration, loss, chosenDelta, rejectedDelta, chosenTarget, rejectedTarget }
    summaries: new Map(), // iteration → IterationSummary
    health: new Map(), // service → ServiceHealth
    judged: [], // newest first
  };
}
reset();

function apply(event) {
  const iteration = num(event.iteration);
  if (event.runId) state.runId = event.runId;
  if (event.runPlan) state.plan = event.runPlan;
  else if (event.runStatus) {
    const s = event.runStatus.state ?? "RUN_STATE_UNSPECIFIED";
    state.status = { state: s.replace("RUN_STATE_", "").toLowerCase(), message: event.runStatus.message ?? "" };
  } else if (event.progress) {
    const p = event.progress;
    state.iteration = Math.max(state.iteration, iteration);
    if (!state.progress.has(iteration)) state.progress.set(iteration, new Map());
    state.progress.get(iteration).set(p.stage, p);
    if (num(p.tokensPerSecond) > 0) tokensOf(iteration).set(p.stage, num(p.tokensPerSecond));
  } else if (event.trainStep) {
    const t = event.trainStep;
    state.iteration = Math.max(state.iteration, iteration);
    state.steps.push({
      iteration,
      // The run's step count, 1, 2, …: the optimizer numbers its own steps (a restarted one continues its count).
      step: state.steps.length + 1,
      loss: num(t.loss),
      chosenDelta: num(t.chosenDelta),
      rejectedDelta: num(t.rejectedDelta),
      chosenTarget: t.chosenTarget ?? null,
      rejectedTarget: t.rejectedTarget ?? null,
      target: num(t.target),
    });
    tokensOf(iteration).set("STAGE_TRAIN", num(t.tokensPerSecond));
  } else if (event.iterationSummary) {
    state.summaries.set(iteration, event.iterationSummary);
  } else if (event.serviceHealth) {
    state.health.set(event.serviceHealth.service, event.serviceHealth);
  } else if (event.judgedSet) {
    state.judged.unshift({ iteration, ...event.judgedSet });
    state.judged.length = Math.min(state.judged.length, JUDGED_SHOWN);
  }
}

function tokensOf(iteration) {
  if (!state.tokens.has(iteration)) state.tokens.set(iteration, new Map());
  return state.tokens.get(iteration);
}

// ---- charts ---------------------------------------------------------------------------------------------------

const charts = {};
function chart(id, options, data) {
  const box = $(id);
  const width = Math.max(300, box.clientWidth);
  if (!charts[id]) {
    // The legend names the series; values under the cursor are off (they would read "--" most of the time).
    charts[id] = new uPlot({ width, height: 240, legend: { live: false }, ...options }, data, box);
  } else {
    charts[id].setData(data);
    if (Math.abs(charts[id].width - width) > 4) charts[id].setSize({ width, height: 240 });
  }
  box.dataset.points = String(data[0].length);
}

/** Vertical lines where a new iteration starts on a per-step chart, labelled "it N". */
function iterationMarks() {
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#999";
          ctx.fillStyle = "#666";
          ctx.setLineDash([4, 4]);
          ctx.font = `${11 * devicePixelRatio}px sans-serif`;
          let previous;
          for (const s of state.steps) {
            if (previous !== undefined && s.iteration !== previous) {
              const x = Math.round(u.valToPos(s.step - 0.5, "x", true));
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.fillText(`it ${s.iteration}`, x + 4, u.bbox.top + 12 * devicePixelRatio);
            }
            previous = s.iteration;
          }
          ctx.restore();
        },
      ],
    },
  };
}

const axis = (label) => ({ label, labelSize: 20, size: 48 });
/** An axis of whole numbers (iterations): ticks 1, 2, 5, 10, … apart, never 0.5. */
const wholeAxis = (label) => ({ ...axis(label), incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] });

function drawCharts() {
  const its = [...state.summaries.keys()].sort((a, b) => a - b);
  chart(
    "chart-winrate",
    {
      scales: { x: { time: false }, y: { range: [0, 1] } },
      axes: [wholeAxis("iteration"), axis("win rate")],
      series: [{ label: "iteration" }, { label: "vs base", stroke: "#1f77b4", width: 2 }, { label: "vs previous", stroke: "#ff7f0e", width: 2 }],
    },
    [
      [0, ...its],
      [0.5, ...its.map((i) => num(state.summaries.get(i).winRateVsBase))],
      [null, ...its.map((i) => num(state.summaries.get(i).winRateVsPrevious))],
    ],
  );
  const steps = state.steps;
  chart(
    "chart-loss",
    { scales: { x: { time: false } }, axes: [wholeAxis("optimizer step"), axis("loss")], series: [{ label: "step" }, { label: "loss", stroke: "#d62728", width: 1.5 }], plugins: [iterationMarks()] },
    [steps.map((s) => s.step), steps.map((s) => s.loss)],
  );
  chart(
    "chart-delta",
    {
      scales: { x: { time: false } },
      axes: [wholeAxis("optimizer step"), axis("nats")],
      series: [
        { label: "step" },
        { label: "chosen Δ", stroke: "#2ca02c", width: 1.5 },
        { label: "chosen target", stroke: "#2ca02c", dash: [6, 4] },
        { label: "rejected Δ", stroke: "#9467bd", width: 1.5 },
        { label: "rejected target", stroke: "#9467bd", dash: [6, 4] },
      ],
      plugins: [iterationMarks()],
    },
    [steps.map((s) => s.step), steps.map((s) => s.chosenDelta), steps.map((s) => s.chosenTarget), steps.map((s) => s.rejectedDelta), steps.map((s) => s.rejectedTarget)],
  );
  const tokenIts = [...state.tokens.keys()].sort((a, b) => a - b);
  chart(
    "chart-tokens",
    {
      scales: { x: { time: false } },
      axes: [wholeAxis("iteration"), { ...axis("tokens/s"), size: 60 }],
      series: [{ label: "iteration" }, ...STAGES.map((s) => ({ label: STAGE_NAMES[s], stroke: STAGE_COLORS[s], width: 2, points: { show: true } }))],
    },
    [tokenIts, ...STAGES.map((stage) => tokenIts.map((i) => state.tokens.get(i).get(stage) ?? null))],
  );
}

// ---- tables and panels ----------------------------------------------------------------------------------------

function drawHeader() {
  $("run-id").textContent = state.runId;
  const status = $("status");
  status.dataset.state = state.status.state;
  status.textContent = state.status.message ? `${state.status.state}: ${state.status.message}` : state.status.state;
  const plan = state.plan;
  $("plan").textContent = plan
    ? `${plan.algorithm ?? ""} · ${num(plan.iterations)} iterations of ${(plan.promptsPerIteration ?? []).join("/")} prompts · K = ${num(plan.samplesPerPrompt)} · η = ${num(plan.eta)}`
    : "";
}

function drawStages() {
  const iteration = state.iteration;
  $("stages-iteration").textContent = iteration > 0 ? `(iteration ${iteration}${state.plan ? ` of ${num(state.plan.iterations)}` : ""})` : "";
  const current = state.progress.get(iteration) ?? new Map();
  const tokens = state.tokens.get(iteration) ?? new Map();
  const trainSteps = state.steps.filter((s) => s.iteration === iteration).length;
  const body = $("stages").tBodies[0];
  body.replaceChildren(
    ...STAGES.map((stage) => {
      const p = current.get(stage);
      const done = stage === "STAGE_TRAIN" && !p ? trainSteps : num(p?.done);
      const total = stage === "STAGE_TRAIN" && !p ? trainSteps : num(p?.total);
      const bar = el("progress", { max: String(Math.max(total, 1)), value: String(done) });
      return el("tr", { "data-stage": STAGE_NAMES[stage] }, [
        el("td", { text: STAGE_NAMES[stage] }),
        el("td", {}, [bar]),
        el("td", { text: stage === "STAGE_TRAIN" && !p ? `${done} steps` : `${done}/${total}` }),
        el("td", { text: p ? rate(num(p.rate)) : "—" }),
        el("td", { text: tokens.has(stage) ? rate(tokens.get(stage)) : "—" }),
        el("td", { text: String(num(p?.skipped)) }),
      ]);
    }),
  );
}

function drawHealth() {
  if (state.health.size === 0) return;
  const names = { SERVING_STATE_SERVING: "serving", SERVING_STATE_NOT_SERVING: "not serving", SERVING_STATE_UNREACHABLE: "unreachable" };
  $("health").replaceChildren(
    ...[...state.health.values()].map((h) => {
      const word = names[h.state] ?? "unknown";
      return el("li", { "data-service": h.service, "data-state": word }, [
        el("span", { class: `dot ${word.replace(" ", "-")}` }),
        el("b", { text: h.service }),
        ` ${h.address}${h.embedded ? " (in this process)" : ""}: ${word}${h.message ? ` — ${h.message}` : ""}`,
      ]);
    }),
  );
}

function drawWinRates() {
  const its = [...state.summaries.keys()].sort((a, b) => a - b);
  $("winrates").tBodies[0].replaceChildren(
    ...its.map((i) => {
      const s = state.summaries.get(i);
      const cell = (v) => el("td", { "data-value": String(num(v)), text: fixed(num(v), 3) });
      return el("tr", { "data-iteration": String(i) }, [
        el("td", { text: String(i) }),
        el("td", { text: String(num(s.prompts)) }),
        cell(s.winRateVsBase),
        cell(s.winRateVsPrevious),
        el("td", { text: `v${num(s.policy?.version)}` }),
        el("td", { text: fixed(num(s.seconds), 1) }),
      ]);
    }),
  );
  const last = state.steps.at(-1);
  const latest = $("loss-latest");
  latest.textContent = last ? `latest ${last.loss.toFixed(4)} (step ${state.steps.length}, iteration ${last.iteration})` : "";
  latest.dataset.value = last ? String(last.loss) : "";
}

/** White at ½, blue towards 1 (row preferred), red towards 0. */
function heat(p) {
  const t = Math.min(1, Math.abs(p - 0.5) * 2);
  const [r, g, b] = p >= 0.5 ? [33, 102, 172] : [178, 24, 43];
  const mix = (c) => Math.round(255 + (c - 255) * t);
  return `background: rgb(${mix(r)}, ${mix(g)}, ${mix(b)}); color: ${t > 0.6 ? "#fff" : "#000"}`;
}

function drawJudged() {
  if (state.judged.length === 0) return;
  $("judged").replaceChildren(
    ...state.judged.map((set) => {
      const candidates = set.candidates ?? [];
      const k = candidates.length;
      const prefs = (set.preferences ?? []).map(num);
      const rates = candidates.map((c) => num(c.winRate));
      const best = rates.indexOf(Math.max(...rates));
      const worst = rates.indexOf(Math.min(...rates));
      const head = el("tr", {}, [el("th", { text: "" }), ...candidates.map((_, j) => el("th", { text: `y${j + 1}` })), el("th", { text: "P̂" })]);
      const rows = candidates.map((_, i) =>
        el("tr", {}, [
          el("th", { text: `y${i + 1}` }),
          ...candidates.map((_, j) => {
            const p = prefs[i * k + j];
            return el("td", { class: "p", "data-value": String(p), style: heat(p), title: `P(y${i + 1} ≻ y${j + 1}) = ${p}` }, [p.toFixed(2)]);
          }),
          el("td", { class: "phat", "data-value": String(rates[i]), text: rates[i].toFixed(3) }),
        ]),
      );
      const list = el(
        "ol",
        { class: "candidates" },
        candidates.map((c, i) =>
          el("li", { class: i === best ? "chosen" : i === worst ? "rejected" : "" }, [
            el("span", { class: "phat", text: `P̂ ${rates[i].toFixed(3)}` }),
            ` ${c.text === undefined || c.text === "" ? "(empty)" : c.text}`,
          ]),
        ),
      );
      return el("article", { class: "judged-set", "data-prompt-id": set.promptId ?? "", "data-iteration": String(set.iteration) }, [
        el("h3", { text: `iteration ${set.iteration} · prompt ${set.promptId ?? ""} · policy v${num(set.policyVersion)} · ${k} candidates` }),
        el("p", { class: "prompt", text: set.prompt ?? "" }),
        el("div", { class: "judged-body" }, [el("table", { class: "heatmap" }, [el("thead", {}, [head]), el("tbody", {}, rows)]), list]),
      ]);
    }),
  );
}

// ---- the stream -----------------------------------------------------------------------------------------------

let pending;
let ended = false;
function render() {
  pending = undefined;
  drawHeader();
  drawStages();
  drawHealth();
  drawWinRates();
  drawCharts();
  drawJudged();
  document.body.dataset.events = String(eventCount);
  // Set by a render after the end of the stream: what is shown now is the run's final state.
  if (ended) document.body.dataset.ended = "true";
}
/** At most one redraw per 200 ms, however fast events come. */
function scheduleRender() {
  if (pending === undefined) pending = setTimeout(render, 200);
}

let eventCount = 0;
const source = new EventSource("/events");
source.addEventListener("reset", () => {
  reset();
  eventCount = 0;
  scheduleRender();
});
source.addEventListener("telemetry", (message) => {
  apply(JSON.parse(message.data));
  eventCount++;
  scheduleRender();
});
source.addEventListener("end", () => {
  // The run is over: what is shown are its final numbers. No reconnecting.
  ended = true;
  source.close();
  scheduleRender();
});
source.addEventListener("error", () => {
  if (ended) return;
  state.status = { state: "disconnected", message: "the run's dashboard does not answer; retrying" };
  scheduleRender();
});
window.addEventListener("resize", scheduleRender);
