/**
 * Backend selection and the project-wide fixes for tfjs's `wasm` backend (DESIGN §4).
 *
 * Order: native TensorFlow (`@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node`) where it imports cleanly →
 * `wasm` (SIMD build, single-threaded in Node) → `cpu`. The native packages download libtensorflow at install time
 * and are absent or half-installed on most machines here, so each is a dynamic import inside try/catch.
 *
 * The wasm fixes are registered once, when `wasm` is first initialised, and apply to every caller in the process:
 *  - `BatchMatMul` with `transposeA`/`transposeB` runs 15–60× slower than an explicit `Transpose` followed by a plain
 *    product, and every matMul gradient uses those flags. We re-register the kernel to transpose explicitly first.
 *  - `BatchMatMul` with batch dims (attention's [B, H, T, hs] products) runs at 0.1–0.4 GFLOP/s; the re-registered
 *    kernel runs one 2-D product per batch entry instead (measured [64,128,32]·[64,32,128]: 182 → 12 ms; plain-JS
 *    loops reached only 0.6 GFLOP/s, so they are not used).
 *  - `UnsortedSegmentSum` (the gradient of `gather`, i.e. of every embedding lookup) is missing; we register a
 *    plain-JS kernel for it on the wasm heap.
 *
 * Run `node --import tsx bench/run.ts --only wasm-kernels` to measure both.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { Code, RpcError } from "../lib/errors.js";

/** A backend name the engine can run on. "auto" picks the best one present. */
export type BackendName = "auto" | "tensorflow" | "wasm" | "cpu";

/** What `initBackend` chose and why the ones before it were skipped. */
export interface BackendInfo {
  /** tfjs's name of the active backend ("tensorflow", "wasm" or "cpu"). */
  name: string;
  /** The native package behind "tensorflow" (`@tensorflow/tfjs-node-gpu` or `@tensorflow/tfjs-node`); absent otherwise. */
  nativePackage?: string;
  /** One line per backend that was tried and skipped, with the reason. */
  skipped: string[];
}

let current: Promise<BackendInfo> | undefined;
let currentRequest: BackendName | undefined;

/** The native package that started the "tensorflow" backend, or undefined. */
async function tryNative(skipped: string[]): Promise<string | undefined> {
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      await import(pkg);
      if (await tf.setBackend("tensorflow")) return pkg;
      skipped.push(`${pkg}: imported but the "tensorflow" backend did not initialise`);
    } catch (err) {
      skipped.push(`${pkg}: ${(err as Error).message.split("\n")[0]}`);
    }
  }
  return undefined;
}

let wasmPathsSet = false;

/** Points the wasm backend at the .wasm binaries in node_modules (never fetched) and installs the kernel fixes. */
function configureWasm(wasm: typeof import("@tensorflow/tfjs-backend-wasm")): void {
  if (!wasmPathsSet) {
    const require = createRequire(import.meta.url);
    const dir = dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"));
    wasm.setWasmPaths(`${join(dir, "dist")}/`);
    wasmPathsSet = true;
  }
  installWasmFixes();
}

async function tryWasm(skipped: string[]): Promise<boolean> {
  try {
    configureWasm(await import("@tensorflow/tfjs-backend-wasm"));
    if (await tf.setBackend("wasm")) return true;
    skipped.push("wasm: did not initialise");
  } catch (err) {
    skipped.push(`wasm: ${(err as Error).message.split("\n")[0]}`);
  }
  return false;
}

/**
 * Chooses and initialises the tfjs backend once per process (later calls with the same request return the same
 * answer; a different request switches). `auto` = tensorflow → wasm → cpu; naming one forces it and throws if it
 * cannot start.
 */
export function initBackend(request: BackendName = "auto"): Promise<BackendInfo> {
  if (current && currentRequest === request) return current;
  currentRequest = request;
  current = (async () => {
    const skipped: string[] = [];
    const nativePackage = request === "auto" || request === "tensorflow" ? await tryNative(skipped) : undefined;
    if (nativePackage) return { name: tf.getBackend(), nativePackage, skipped };
    if (request === "tensorflow") throw new RpcError(Code.FAILED_PRECONDITION, `backend "tensorflow" is not available: ${skipped.join("; ")}`);
    if ((request === "auto" || request === "wasm") && (await tryWasm(skipped))) return { name: tf.getBackend(), skipped };
    if (request === "wasm") throw new RpcError(Code.FAILED_PRECONDITION, `backend "wasm" is not available: ${skipped.join("; ")}`);
    if (!(await tf.setBackend("cpu"))) throw new RpcError(Code.INTERNAL, "backend cpu did not initialise");
    return { name: tf.getBackend(), skipped };
  })();
  current.catch(() => {
    current = undefined;
  });
  return current;
}

// ---- wasm kernel fixes ----------------------------------------------------------------------------------------------

/** The slice of the wasm backend these kernels use (its class is not exported with types we can import cheaply). */
interface WasmBackendLike extends tf.KernelBackend {
  readSync(dataId: object): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
  disposeData(dataId: object): boolean;
}

let wasmFixed = false;

const sizeOf = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

/**
 * Batched matMul (batch > 1) as one XNNPACK 2-D product per batch entry: the wasm kernel's own batched path runs
 * attention's [B·H, T, hs] shapes at 0.1–0.4 GFLOP/s, its 2-D path at 5–20. Slices are copied on the wasm heap; a
 * fresh right-hand tensor per product, because the kernel caches packed weights by tensor id.
 */
function batchedMatMulSliced(
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transA: boolean,
  transB: boolean,
  backend: WasmBackendLike,
  matMul2d: tf.KernelFunc,
  swapLast: (x: tf.TensorInfo, backend: unknown) => tf.TensorInfo,
): tf.TensorInfo {
  const a2 = transA ? swapLast(a, backend) : a; // (..., M, K)
  const b2 = transB ? swapLast(b, backend) : b; // (..., K, N)
  const ra = a2.shape.length;
  const rb = b2.shape.length;
  const [M, K] = a2.shape.slice(ra - 2);
  const [Kb, N] = b2.shape.slice(rb - 2);
  if (K !== Kb) throw new RpcError(Code.INTERNAL, `matMul: inner dimensions ${K} and ${Kb} of [${a.shape}] and [${b.shape}] differ`);
  const batchA = sizeOf(a2.shape.slice(0, -2));
  const batchB = sizeOf(b2.shape.slice(0, -2));
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) throw new RpcError(Code.INTERNAL, `matMul: batch dims of [${a.shape}] and [${b.shape}] do not broadcast`);
  const batch = Math.max(batchA, batchB);
  const outer = (batchA >= batchB ? a2 : b2).shape.slice(0, -2);
  const out = backend.makeOutput([...outer, M, N], "float32");
  const attrs = { transposeA: false, transposeB: false } as unknown as tf.NamedAttrMap;
  const aSlice = backend.makeOutput([M, K], "float32");
  for (let bi = 0; bi < batch; bi++) {
    const bSlice = backend.makeOutput([K, N], "float32");
    // Views are taken after every allocation: growing the wasm memory detaches earlier ones.
    const ai = batchA === 1 ? 0 : bi;
    const bj = batchB === 1 ? 0 : bi;
    backend.typedArrayFromHeap(aSlice).set(backend.typedArrayFromHeap(a2).subarray(ai * M * K, (ai + 1) * M * K));
    backend.typedArrayFromHeap(bSlice).set(backend.typedArrayFromHeap(b2).subarray(bj * K * N, (bj + 1) * K * N));
    const prod = matMul2d({ inputs: { a: aSlice, b: bSlice }, backend, attrs }) as tf.TensorInfo;
    backend.typedArrayFromHeap(out).set(backend.typedArrayFromHeap(prod), bi * M * N);
    backend.disposeData(prod.dataId);
    backend.disposeData(bSlice.dataId);
  }
  backend.disposeData(aSlice.dataId);
  if (transA) backend.disposeData(a2.dataId);
  if (transB) backend.disposeData(b2.dataId);
  return out;
}

/** Whether the wasm fixes are registered (for tests and the bench). */
export function wasmFixesInstalled(): boolean {
  return wasmFixed;
}

let originalBatchMatMul: tf.KernelConfig | undefined;
let fixedBatchMatMul: tf.KernelConfig | undefined;

/**
 * Switches wasm's BatchMatMul between the fixed kernel and tfjs's original (to measure what the fix buys; the
 * bench does this). No effect before the wasm backend is initialised.
 */
export function setWasmMatMulFix(enabled: boolean): void {
  if (!originalBatchMatMul || !fixedBatchMatMul) return;
  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel(enabled ? fixedBatchMatMul : originalBatchMatMul);
}

function installWasmFixes(): void {
  if (wasmFixed) return;
  const original = tf.getKernel("BatchMatMul", "wasm");
  const transposeKernel = tf.getKernel("Transpose", "wasm");
  if (!original || !transposeKernel) throw new RpcError(Code.INTERNAL, "wasm backend lacks BatchMatMul or Transpose kernels");
  const originalFunc = original.kernelFunc;
  const transposeFunc = transposeKernel.kernelFunc;
  // Swap the last two axes of `x` with the wasm Transpose kernel; the caller frees the result.
  const swapLast = (x: tf.TensorInfo, backend: unknown): tf.TensorInfo => {
    const rank = x.shape.length;
    const perm = [...Array(rank).keys()];
    [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
    return transposeFunc({ inputs: { x }, backend: backend as tf.KernelBackend, attrs: { perm } }) as tf.TensorInfo;
  };
  tf.unregisterKernel("BatchMatMul", "wasm");
  originalBatchMatMul = { ...original };
  fixedBatchMatMul = {
    kernelName: "BatchMatMul",
    backendName: "wasm",
    setupFunc: original.setupFunc,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const wasmBackend = backend as WasmBackendLike;
      if (a.shape.length > 2 && a.dtype === "float32" && b.dtype === "float32") {
        const batch = Math.max(sizeOf(a.shape.slice(0, -2)), sizeOf(b.shape.slice(0, -2)));
        if (batch > 1) return batchedMatMulSliced(a, b, transposeA, transposeB, wasmBackend, originalFunc, swapLast);
      }
      if (!transposeA && !transposeB) return originalFunc({ inputs, backend, attrs });
      const a2 = transposeA ? swapLast(a, backend) : a;
      const b2 = transposeB ? swapLast(b, backend) : b;
      const out = originalFunc({
        inputs: { a: a2, b: b2 },
        backend,
        attrs: { ...attrs, transposeA: false, transposeB: false } as unknown as tf.NamedAttrMap,
      });
      if (transposeA) wasmBackend.disposeData(a2.dataId);
      if (transposeB) wasmBackend.disposeData(b2.dataId);
      return out;
    },
  };
  tf.registerKernel(fixedBatchMatMul);

  if (!tf.getKernel("UnsortedSegmentSum", "wasm")) {
    tf.registerKernel({
      kernelName: "UnsortedSegmentSum",
      backendName: "wasm",
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
        const { numSegments } = attrs as unknown as { numSegments: number };
        const wasmBackend = backend as WasmBackendLike;
        const ids = wasmBackend.readSync(segmentIds.dataId) as Int32Array;
        const values = wasmBackend.readSync(x.dataId) as Float32Array | Int32Array;
        // x is [...segmentIds.shape, ...inner]; out is [numSegments, ...inner].
        const inner = x.shape.slice(segmentIds.shape.length);
        const innerSize = inner.reduce((p, d) => p * d, 1);
        const out = wasmBackend.makeOutput([numSegments, ...inner], x.dtype);
        const heap = wasmBackend.typedArrayFromHeap(out);
        heap.fill(0);
        for (let i = 0; i < ids.length; i++) {
          const seg = ids[i];
          if (seg < 0 || seg >= numSegments) continue; // TensorFlow drops out-of-range ids
          const src = i * innerSize;
          const dst = seg * innerSize;
          for (let j = 0; j < innerSize; j++) heap[dst + j] += values[src + j];
        }
        return out;
      },
    });
  }
  wasmFixed = true;
}

// Install the fixes as soon as this module loads, so that code which calls tf.setBackend("wasm") itself (rather
// than initBackend) gets them too. Absent or broken wasm packages are reported by initBackend, not here.
try {
  configureWasm(await import("@tensorflow/tfjs-backend-wasm"));
} catch {
  // initBackend("wasm") will say why
}
// Registering wasm makes it the highest-priority backend, but it initialises asynchronously: until someone awaits
// initBackend (or tf.ready), any op would throw "backend 'wasm' has not yet been initialized". The cpu backend
// initialises synchronously, so code that makes tensors first still works; initBackend switches to the best one.
void tf.setBackend("cpu");
