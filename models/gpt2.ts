/**
 * GPT-2 (Radford et al., 2019) in tfjs, parameter names as in Hugging Face's `GPT2LMHeadModel`:
 * transformer.wte / wpe, transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f;
 * the LM head is tied to wte. Conv1D weights are stored [in, out], exactly as in the checkpoint.
 */
import * as tf from "@tensorflow/tfjs";
import { type GPT2Config, gpt2Config } from "./config.js";
import { attention, attentionBias, conv1d, geluErf, geluTanh, layerNorm, makeParam, positionsFor, splitHeads } from "./layers.js";
import type { CausalLM, ForwardOptions, ForwardOutput, KVCache } from "./model.js";
import { Code, kindError, RpcError } from "../lib/errors.js";

/** The HF names and shapes of every GPT-2 parameter, in checkpoint order. */
export function gpt2ParamShapes(config: GPT2Config): [string, number[]][] {
  const C = config.n_embd;
  const inner = config.n_inner ?? 4 * C;
  const out: [string, number[]][] = [
    ["transformer.wte.weight", [config.vocab_size, C]],
    ["transformer.wpe.weight", [config.n_positions, C]],
  ];
  for (let i = 0; i < config.n_layer; i++) {
    const p = `transformer.h.${i}`;
    out.push(
      [`${p}.ln_1.weight`, [C]],
      [`${p}.ln_1.bias`, [C]],
      [`${p}.attn.c_attn.weight`, [C, 3 * C]],
      [`${p}.attn.c_attn.bias`, [3 * C]],
      [`${p}.attn.c_proj.weight`, [C, C]],
      [`${p}.attn.c_proj.bias`, [C]],
      [`${p}.ln_2.weight`, [C]],
      [`${p}.ln_2.bias`, [C]],
      [`${p}.mlp.c_fc.weight`, [C, inner]],
      [`${p}.mlp.c_fc.bias`, [inner]],
      [`${p}.mlp.c_proj.weight`, [inner, C]],
      [`${p}.mlp.c_proj.bias`, [C]],
    );
  }
  out.push(["transformer.ln_f.weight", [C]], ["transformer.ln_f.bias", [C]]);
  return out;
}

export class GPT2LMHeadModel implements CausalLM {
  readonly config: GPT2Config;
  readonly params: Map<string, tf.Variable>;

  /**
   * A GPT-2 with the given parameters (by HF name; see `gpt2ParamShapes`), or, without them, freshly initialised as
   * GPT-2 does (normal 0.02; residual projections 0.02/√(2·n_layer); LayerNorm 1/0) from `seed`.
   */
  constructor(config: Partial<GPT2Config> = {}, params?: Map<string, tf.Variable>, seed = 0) {
    this.config = gpt2Config(config);
    const shapes = gpt2ParamShapes(this.config);
    if (params) {
      for (const [name, shape] of shapes) {
        const p = params.get(name);
        if (!p) throw kindError("model-format", `GPT-2: parameter ${name} is missing`);
        if (p.shape.join() !== shape.join()) throw kindError("model-format", `GPT-2: parameter ${name} has shape [${p.shape}], expected [${shape}]`);
      }
      this.params = params;
    } else {
      this.params = new Map();
      const residualStd = 0.02 / Math.sqrt(2 * this.config.n_layer);
      shapes.forEach(([name, shape], index) => {
        const isNorm = /ln_\d|ln_f/.test(name);
        const init = name.endsWith(".bias")
          ? { kind: "zeros" as const }
          : isNorm
            ? { kind: "ones" as const }
            : { kind: "normal" as const, std: name.endsWith("c_proj.weight") ? residualStd : 0.02 };
        this.params.set(name, makeParam(name, shape, init, seed, index));
      });
    }
  }

  private p(name: string): tf.Variable {
    return this.params.get(name)!;
  }

  forward(ids: tf.Tensor2D, options: ForwardOptions = {}): ForwardOutput {
    const { n_head: nHead, n_embd: C, n_layer: nLayer, layer_norm_epsilon: eps } = this.config;
    const hs = C / nHead;
    return tf.tidy(() => {
      const [B, T] = ids.shape; // batch, new time
      const past = options.cache ? options.cache.layers[0].k.shape[2] : 0;
      if (past + T > this.config.n_positions) throw new RpcError(Code.OUT_OF_RANGE, `GPT-2: sequence of ${past + T} tokens exceeds n_positions ${this.config.n_positions}`);
      const positions = positionsFor(B, T, options);
      let x = tf.gather(this.p("transformer.wte.weight"), ids).add(tf.gather(this.p("transformer.wpe.weight"), positions)); // (B, T, C)
      const bias = attentionBias(B, T, past + T, options.attentionMask);
      const layers: KVCache["layers"] = [];
      for (let i = 0; i < nLayer; i++) {
        const pre = `transformer.h.${i}`;
        const h = layerNorm(x, this.p(`${pre}.ln_1.weight`), this.p(`${pre}.ln_1.bias`), eps);
        const qkv = conv1d(h, this.p(`${pre}.attn.c_attn.weight`), this.p(`${pre}.attn.c_attn.bias`)); // (B, T, 3C)
        const [q, k, v] = tf.split(qkv, 3, 2).map((t) => splitHeads(t, nHead, hs)); // each (B, nh, T, hs)
        const att = attention(q, k, v, bias, options.cache?.layers[i]);
        if (options.useCache) layers.push({ k: att.k, v: att.v });
        x = x.add(conv1d(att.y, this.p(`${pre}.attn.c_proj.weight`), this.p(`${pre}.attn.c_proj.bias`)));
        const h2 = layerNorm(x, this.p(`${pre}.ln_2.weight`), this.p(`${pre}.ln_2.bias`), eps);
        let m = conv1d(h2, this.p(`${pre}.mlp.c_fc.weight`), this.p(`${pre}.mlp.c_fc.bias`)); // (B, T, inner)
        m = this.config.activation_function === "gelu_new" ? geluTanh(m) : this.config.activation_function === "gelu" ? geluErf(m) : m.relu();
        x = x.add(conv1d(m, this.p(`${pre}.mlp.c_proj.weight`), this.p(`${pre}.mlp.c_proj.bias`)));
      }
      if (options.lastOnly) x = x.slice([0, T - 1, 0], [B, 1, C]); // (B, 1, C)
      x = layerNorm(x, this.p("transformer.ln_f.weight"), this.p("transformer.ln_f.bias"), eps);
      const Tout = x.shape[1] as number;
      // Tied head: logits = x · wteᵀ, with wte transposed explicitly (see backend.ts on transposed matMuls).
      const logits = tf
        .matMul(x.reshape([B * Tout, C]) as tf.Tensor2D, this.p("transformer.wte.weight").transpose() as tf.Tensor2D) // (B*T, V)
        .reshape([B, Tout, this.config.vocab_size]) as tf.Tensor3D; // (B, T, V)
      return options.useCache ? { logits, cache: { layers } } : { logits };
    });
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
  }
}
