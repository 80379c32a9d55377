/**
 * The report's chart axes. A run whose win rates were 0.5 and 0.49999999999999994 once hung the loop here: the tick
 * step was below the float resolution at 0.5, so `v += step` never moved. Run: node --import tsx --test test/pipeline/report.test.ts
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { linearChart, niceTicks } from "../../pipeline/report.js";

describe("report axes", () => {
  it("gives round ticks over an ordinary span", () => {
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(-3, 12), [0, 5, 10]);
  });

  it("ends on a span at float resolution, and a chart of such a series draws", () => {
    assert.deepEqual(niceTicks(0.49999999999999994, 0.5), [0.49999999999999994]);
    const svg = linearChart("win rate", "iteration", [{ label: "vs base", color: "#000", points: [{ x: 1, y: 0.5 }, { x: 2, y: 0.49999999999999994 }] }]);
    assert.match(svg, /^<svg/);
    assert.ok(svg.split("<line").length < 40, "a handful of grid lines");
  });
});
