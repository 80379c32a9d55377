/** Terminal progress bars (cli-progress) for generation, comparison, training and evaluation, with rates and ETA. */
import { MultiBar, Presets, type SingleBar } from "cli-progress";
import { Stage } from "../gen/sppo/v1/telemetry_pb.js";
import { describeEvent, type TelemetryHub } from "./telemetry.js";

export function showProgress(hub: TelemetryHub): () => void {
  const multibar = new MultiBar(
    { format: " {stage} |{bar}| {value}/{total} {unit} | {rate}/s | ETA {eta_formatted} | {detail}", hideCursor: true, clearOnComplete: false, stream: process.stderr },
    Presets.shades_classic,
  );
  const bars = new Map<string, SingleBar>();
  const bar = (key: string, stage: string, total: number, unit: string) => {
    let b = bars.get(key);
    if (!b) {
      b = multibar.create(total, 0, { stage: stage.padEnd(16), unit, rate: "0.0", detail: "" });
      bars.set(key, b);
    }
    b.setTotal(total);
    return b;
  };
  const subscription = hub.events$.subscribe((event) => {
    const p = event.payload;
    if (p.case === "progress") {
      const name = Stage[p.value.stage].toLowerCase();
      bar(`${event.iteration}/${name}`, `it${event.iteration} ${name}`, p.value.total, "prompts").update(p.value.done, { rate: p.value.rate.toFixed(1) });
    } else if (p.case === "trainStep") {
      const b = bar(`${event.iteration}/train`, `it${event.iteration} train`, Math.max(Number(p.value.step), 1), "steps");
      b.update(Number(p.value.step), { rate: p.value.examplesPerSecond.toFixed(1), unit: "steps", detail: `loss ${p.value.loss.toFixed(4)}` });
    } else if (p.case === "iterationSummary" || p.case === "runStatus") {
      multibar.log(`${describeEvent(event)}\n`);
    }
  });
  return () => {
    subscription.unsubscribe();
    multibar.stop();
  };
}
