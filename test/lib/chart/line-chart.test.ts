/**
 * The one chart writer (lib/chart/line-chart.ts): ticks that cover the data, labels that read as numbers, the legend
 * beside the plot, axis titles, markers, log axes. A run whose win rates were 0.5 and 0.49999999999999994 once hung
 * the loop here: the tick step was below the float resolution at 0.5. Run: node --import tsx --test test/lib/chart/line-chart.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatTick, lineChartSvg, niceTicks } from "../../../lib/chart/line-chart.js";

/** The numbers of every `<text ...>label</text>` whose x is `x` (a y axis's tick labels). */
function labelsAt(svg: string, anchor: "end" | "middle"): { x: number; y: number; text: string }[] {
  return [...svg.matchAll(/<text x="([\d.]+)" y="([\d.]+)" text-anchor="(\w+)"[^>]*>([^<]*)<\/text>/g)].filter((m) => m[3] === anchor).map((m) => ({ x: Number(m[1]), y: Number(m[2]), text: m[4] }));
}

describe("lib/chart line charts", () => {
  it("gives round ticks that cover the data", () => {
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(-3, 12), [-5, 0, 5, 10, 15]);
    // The report's loss chart once ran from 0.31 to 1.1982 with ticks 0.4 … 1: the data left the axis.
    const ticks = niceTicks(0.31, 1.1982);
    assert.ok(ticks[0] <= 0.31 && ticks.at(-1)! >= 1.1982, `${ticks}`);
    assert.deepEqual(niceTicks(1, 3, 5, 1), [1, 2, 3], "whole-number axes step by at least 1");
  });

  it("ends on a span at float resolution, and a chart of such a series draws", () => {
    assert.deepEqual(niceTicks(0.49999999999999994, 0.5), [0.49999999999999994]);
    const svg = lineChartSvg([{ label: "vs base", color: "#000", points: [{ x: 1, y: 0.5 }, { x: 2, y: 0.49999999999999994 }] }], { title: "win rate", xLabel: "iteration", yLabel: "win rate" });
    assert.match(svg, /^<svg/);
    assert.ok(svg.split("<line").length < 40, "a handful of grid lines");
  });

  it("writes numbers as numbers", () => {
    assert.equal(formatTick(6000), "6 000");
    assert.equal(formatTick(12_500), "12 500");
    assert.equal(formatTick(2_500_000), "2.5M");
    assert.equal(formatTick(0.25), "0.25");
    assert.equal(formatTick(-3), "-3");
    assert.equal(formatTick(0.00002), "2e−5");
  });

  it("titles both axes, keeps the legend beside the plot, covers the data with its y ticks, and draws markers", () => {
    const losses = [1.1982, 0.9, 0.61, 0.31, 0.45];
    const svg = lineChartSvg(
      [
        { label: "loss", color: "#d62728", points: losses.map((y, i) => ({ x: i + 1, y })) },
        { label: "target", color: "#777", dashed: true, points: losses.map((_, i) => ({ x: i + 1, y: 0.5 })) },
      ],
      { title: "Training loss", xLabel: "optimizer step", yLabel: "loss", integerX: true, markers: [{ x: 0.5, label: "it 1" }, { x: 3.5, label: "it 2" }], width: 700, height: 300 },
    );
    assert.match(svg, />optimizer step<\/text>/);
    assert.match(svg, /rotate\(-90[^>]*>loss<\/text>/, "the y axis has a title");
    const frame = /<rect x="(\d+)" y="(\d+)" width="(\d+)" height="(\d+)" fill="none" stroke="#333"\/>/.exec(svg)!;
    const [left, top, w, h] = frame.slice(1).map(Number);
    for (const label of ["loss", "target"]) {
      const entry = new RegExp(`<text x="([\\d.]+)" y="[\\d.]+" dominant-baseline="middle">${label}</text>`).exec(svg);
      assert.ok(entry && Number(entry[1]) > left + w, `the legend entry "${label}" is right of the plot`);
    }
    const yTicks = labelsAt(svg, "end").map((t) => Number(t.text));
    assert.ok(Math.min(...yTicks) <= 0.31 && Math.max(...yTicks) >= 1.1982, `y ticks ${yTicks} cover 0.31 … 1.1982`);
    // Every point lies inside the frame.
    for (const m of svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)) {
      const [cx, cy] = [Number(m[1]), Number(m[2])];
      assert.ok(cx >= left && cx <= left + w && cy >= top && cy <= top + h, `point ${cx},${cy} inside the plot`);
    }
    assert.match(svg, /stroke-dasharray="4 4"\/>\n<text[^>]*>it 2<\/text>/, "a labelled marker where iteration 2 starts");
    const xTicks = labelsAt(svg, "middle").filter((t) => t.y > top + h && t.y < top + h + 20).map((t) => t.text);
    assert.ok(xTicks.every((t) => Number.isInteger(Number(t))), `whole-number x ticks: ${xTicks}`);
  });

  it("draws log axes at powers of ten and skips what a log axis cannot show", () => {
    const svg = lineChartSvg([{ label: "exploitability", color: "#1f77b4", points: [{ x: 1, y: 0.25 }, { x: 10, y: 0.04 }, { x: 1000, y: 0.002 }, { x: 100, y: 0 }] }], {
      title: "t",
      xLabel: "t",
      yLabel: "e",
      xScale: "log",
      yScale: "log",
    });
    const y = labelsAt(svg, "end").map((t) => t.text);
    assert.deepEqual(y, ["1e−3", "0.01", "0.1", "1"]);
    assert.equal((svg.match(/<circle /g) ?? []).length, 3, "y = 0 has no place on a log axis");
  });

  it("says so when there is nothing to draw", () => {
    assert.match(lineChartSvg([{ label: "a", color: "#000", points: [] }], { title: "empty", xLabel: "x", yLabel: "y" }), />no data<\/text>/);
  });
});
