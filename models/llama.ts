/**
 * Llama (Touvron et al., 2023) in tfjs, parameter names as in Hugging Face's `LlamaForCausalLM`:
 * model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
 * mlp.{gate,up,down}_proj}, model.norm, lm_head (absent when tied). Linear weights are stored [out, in] as in torch.
 * RMSNorm, rotary positions (HF's rotate_half convention), SwiGLU, grouped-query attention.
 */
import * as tf from "@tensorflow/tfjs";
import { type LlamaConfig, llamaConfig } from "./config.js";
import { attention, attentionBias, linear, makeParam, positionsFor, rmsNorm, splitHeads } from "./layers.js";
import type { CausalLM, ForwardOptions, ForwardOutput, KVCache } from "./model.js";
import { Code, kindError, RpcError } from "../lib/errors.js";

/** The HF names and shapes of every Llama parameter. */
export function llamaParamShapes(config: LlamaConfig): [string, number[]][] {
  const D = config.hidden_size;
  const hd = config.head_dim;
  const qOut = config.num_attention_heads * hd;
  const kvOut = config.num_key_value_heads * hd;
  const I = config.intermediate_size;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [config.vocab_size, D]]];
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      [`${p}.input_layernorm.weight`, [D]],
      [`${p}.self_attn.q_proj.weight`, [qOut, D]],
      [`${p}.self_attn.k_proj.weight`, [kvOut, D]],
      [`${p}.self_attn.v_proj.weight`, [kvOut, D]],
      [`${p}.self_attn.o_proj.weight`, [D, qOut]],
    );
    if (config.attention_bias) {
      out.push([`${p}.self_attn.q_proj.bias`, [qOut]], [`${p}.self_attn.k_proj.bias`, [kvOut]], [`${p}.self_attn.v_proj.bias`, [kvOut]]);
    }
    out.push(
      [`${p}.post_attention_layernorm.weight`, [D]],
      [`${p}.mlp.gate_proj.weight`, [I, D]],
      [`${p}.mlp.up_proj.weight`, [I, D]],
      [`${p}.mlp.down_proj.weight`, [D, I]],
    );
    if (config.mlp_bias) out.push([`${p}.mlp.gate_proj.bias`, [I]], [`${p}.mlp.up_proj.bias`, [I]], [`${p}.mlp.down_proj.bias`, [D]]);
  }
  out.push(["model.norm.weight", [D]]);
  if (!config.tie_word_embeddings) out.push(["lm_head.weight", [config.vocab_size, D]]);
  return out;
}

/** HF rotate_half: for x = [x1, x2] (halves of the last axis) returns [-x2, x1]. */
function rotateHalf(x: tf.Tensor4D): tf.Tensor4D {
  const half = x.shape[3] / 2;
  const [x1, x2] = tf.split(x, [half, half], 3);
  return tf.concat([x2.neg(), x1], 3) as tf.Tensor4D;
}

export class LlamaForCausalLM implements CausalLM {
  readonly config: LlamaConfig;
  readonly params: Map<string, tf.Variable>;
  /** θ^(-2i/head_dim), i = 0..head_dim/2-1, as [1, 1, head_dim/2]. */
  private readonly invFreq: tf.Tensor3D;

  /** A Llama with the given parameters (by HF name), or freshly initialised (normal 0.02, norms 1) from `seed`. */
  constructor(config: Partial<LlamaConfig> = {}, params?: Map<string, tf.Variable>, seed = 0) {
    this.config = llamaConfig(config);
    const shapes = llamaParamShapes(this.config);
    if (params) {
      for (const [name, shape] of shapes) {
        const p = params.get(name);
        if (!p) throw kindError("model-format", `Llama: parameter ${name} is missing`);
        if (p.shape.join() !== shape.join()) throw kindError("model-format", `Llama: parameter ${name} has shape [${p.shape}], expected [${shape}]`);
      }
      this.params = params;
    } else {
      this.params = new Map();
      shapes.forEach(([name, shape], index) => {
        const init = name.endsWith("norm.weight") ? { kind: "ones" as const } : name.endsWith(".bias") ? { kind: "zeros" as const } : { kind: "normal" as const, std: 0.02 };
        this.params.set(name, makeParam(name, shape, init, seed, index));
      });
    }
    const hd = this.config.head_dim;
    const freqs = new Float32Array(hd / 2);
    for (let i = 0; i < hd / 2; i++) freqs[i] = 1 / this.config.rope_theta ** ((2 * i) / hd);
    this.invFreq = tf.tensor3d(freqs, [1, 1, hd / 2]);
  }

  private p(name: string): tf.Variable | undefined {
    return this.params.get(name);
  }

  forward(ids: tf.Tensor2D, options: ForwardOptions = {}): ForwardOutput {
    const c = this.config;
    const hd = c.head_dim;
    const nH = c.num_attention_heads;
    const nKV = c.num_key_value_heads;
    return tf.tidy(() => {
      const [B, T] = ids.shape; // batch, new time
      const past = options.cache ? options.cache.layers[0].k.shape[2] : 0;
      if (past + T > c.max_position_embeddings) throw new RpcError(Code.OUT_OF_RANGE, `Llama: sequence of ${past + T} tokens exceeds max_position_embeddings ${c.max_position_embeddings}`);
      const positions = positionsFor(B, T, options);
      // Rotary tables for these positions: cos, sin are (B, 1, T, hd), each frequency repeated for both halves.
      const angles = positions.toFloat().expandDims(2).mul(this.invFreq); // (B, T, hd/2)
      const full = tf.concat([angles, angles], 2).expandDims(1); // (B, 1, T, hd)
      const cos = full.cos();
      const sin = full.sin();
      const rope = (x: tf.Tensor4D) => x.mul(cos).add(rotateHalf(x).mul(sin)) as tf.Tensor4D;

      let x: tf.Tensor = tf.gather(this.p("model.embed_tokens.weight")!, ids); // (B, T, D)
      const bias = attentionBias(B, T, past + T, options.attentionMask);
      const layers: KVCache["layers"] = [];
      for (let i = 0; i < c.num_hidden_layers; i++) {
        const pre = `model.layers.${i}`;
        const h = rmsNorm(x, this.p(`${pre}.input_layernorm.weight`)!, c.rms_norm_eps);
        const q = rope(splitHeads(linear(h, this.p(`${pre}.self_attn.q_proj.weight`)!, this.p(`${pre}.self_attn.q_proj.bias`)), nH, hd)); // (B, nH, T, hd)
        const k = rope(splitHeads(linear(h, this.p(`${pre}.self_attn.k_proj.weight`)!, this.p(`${pre}.self_attn.k_proj.bias`)), nKV, hd)); // (B, nKV, T, hd)
        const v = splitHeads(linear(h, this.p(`${pre}.self_attn.v_proj.weight`)!, this.p(`${pre}.self_attn.v_proj.bias`)), nKV, hd); // (B, nKV, T, hd)
        const att = attention(q, k, v, bias, options.cache?.layers[i]);
        if (options.useCache) layers.push({ k: att.k, v: att.v });
        x = x.add(linear(att.y, this.p(`${pre}.self_attn.o_proj.weight`)!));
        const h2 = rmsNorm(x, this.p(`${pre}.post_attention_layernorm.weight`)!, c.rms_norm_eps);
        const gate = linear(h2, this.p(`${pre}.mlp.gate_proj.weight`)!, this.p(`${pre}.mlp.gate_proj.bias`)); // (B, T, I)
        const up = linear(h2, this.p(`${pre}.mlp.up_proj.weight`)!, this.p(`${pre}.mlp.up_proj.bias`)); // (B, T, I)
        x = x.add(linear(tf.mul(gate, tf.sigmoid(gate)).mul(up), this.p(`${pre}.mlp.down_proj.weight`)!, this.p(`${pre}.mlp.down_proj.bias`)));
      }
      const D = c.hidden_size;
      if (options.lastOnly) x = x.slice([0, T - 1, 0], [B, 1, D]); // (B, 1, D)
      x = rmsNorm(x, this.p("model.norm.weight")!, c.rms_norm_eps);
      const Tout = x.shape[1] as number;
      const head = c.tie_word_embeddings ? this.p("model.embed_tokens.weight")! : this.p("lm_head.weight")!; // (V, D)
      const logits = tf
        .matMul(x.reshape([B * Tout, D]) as tf.Tensor2D, head.transpose() as tf.Tensor2D) // (B*T, V)
        .reshape([B, Tout, c.vocab_size]) as tf.Tensor3D; // (B, T, V)
      return options.useCache ? { logits, cache: { layers } } : { logits };
    });
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
    this.invFreq.dispose();
  }
}
