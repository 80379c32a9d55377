/**
 * The float formats weights are stored in (safetensors dtypes, ONNX weight files) and the conversions between them
 * and float32, which is what every engine computes in. Conversions write into caller-owned arrays so that loading a
 * checkpoint allocates each tensor once.
 *
 * Rounding: float32 → bfloat16 and float32 → float16 round to nearest, ties to even (as PyTorch's `.to()`), NaN stays
 * NaN, values beyond a format's range become ±Infinity.
 */

/** How float weights are written: float32, or bfloat16 (the hub's usual format, half the bytes). */
export type FloatStorage = "float32" | "bfloat16";

/** The safetensors dtype name of a storage. */
export function safetensorsDtype(storage: FloatStorage | "float16"): "F32" | "BF16" | "F16" {
  return storage === "float32" ? "F32" : storage === "bfloat16" ? "BF16" : "F16";
}

/** float16 bits → float32, all 65 536 of them (256 KiB, built on first use): a table beats the arithmetic. */
let halfTable: Float32Array | undefined;

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

function table(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

/**
 * Widens 16-bit floats to float32 in place: `out`'s buffer holds `count` 16-bit values in its second half (bytes
 * [2·count, 4·count) of the Float32Array's bytes) and ends holding `count` float32s. Reading a tensor this way needs
 * no second buffer. Safe because value i is written at bytes [4i, 4i+4), which hold 16-bit values < i (already read).
 */
export function widenInPlace(out: Float32Array, format: "BF16" | "F16"): void {
  const count = out.length;
  const u16 = new Uint16Array(out.buffer, out.byteOffset, count * 2);
  if (format === "BF16") {
    // bfloat16 is the top half of a float32.
    const u32 = new Uint32Array(out.buffer, out.byteOffset, count);
    for (let i = 0; i < count; i++) u32[i] = u16[count + i] << 16;
  } else {
    const t = table();
    for (let i = 0; i < count; i++) out[i] = t[u16[count + i]];
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** One float32 → bfloat16 bits, round to nearest even. */
export function floatToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40; // NaN: keep it a (quiet) NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** One float32 → float16 bits, round to nearest even (subnormals included). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf, NaN
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow → ±0
    const m = mant | 0x800000; // implicit bit
    const shift = 14 - e; // 24-bit significand → 10-bit subnormal field
    const half = 1 << (shift - 1);
    let r = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r; // a carry into the exponent field is the right answer (smallest normal)
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++; // a carry may round up to Inf: correct
  return sign | r;
}

/** float32 values → 16-bit floats of `format`, into `out` (same length). */
export function narrow(values: Float32Array, format: "BF16" | "F16", out: Uint16Array): Uint16Array {
  if (out.length !== values.length) throw new RangeError(`narrow: ${values.length} values into ${out.length} slots`);
  if (format === "BF16") for (let i = 0; i < values.length; i++) out[i] = floatToBf16(values[i]);
  else for (let i = 0; i < values.length; i++) out[i] = floatToHalf(values[i]);
  return out;
}
