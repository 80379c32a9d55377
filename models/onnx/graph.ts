/**
 * ONNX graphs of a policy, written by our own code from its weights (no Python, no tracing): GPT-2 and Llama, each
 * a transcription of models/gpt2.ts / models/llama.ts's forward, with the weights stored as initializers under their
 * Hugging Face names.
 *
 * Inputs and outputs follow Hugging Face Optimum's decoder export ("with past"), so the file runs where those run:
 *   input_ids [batch, sequence] int64, attention_mask [batch, total_sequence] int64 (past + new; 1 real, 0 padding),
 *   position_ids [batch, sequence] int64, past_key_values.N.key/value [batch, kv_heads, past_sequence, head_dim]
 *   → logits [batch, sequence, vocab], present.N.key/value [batch, kv_heads, total_sequence, head_dim].
 * One graph serves prefill (past_sequence = 0: pass empty [B, KV, 0, hd] tensors) and one-token decode steps.
 * The "step" and "score" kinds (see blocks.ts) are the engine's own: last-position logits for sampling, and the
 * summed response log-probs computed inside the graph for scoring.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { type ModelProto, ModelProtoSchema, TensorProtoSchema } from "onnx-buf";
import { DataType, GraphBuilder, tensor } from "../../lib/onnx/index.js";
import type { GPT2Config, LlamaConfig, ModelConfig } from "../config.js";
import { paramShapes } from "../io.js";
import type { RawTensor } from "../safetensors.js";
import {
  attention,
  conv1d,
  declareInputs,
  declarePresent,
  embed,
  geluErf,
  geluTanh,
  layerNorm,
  linear,
  lmHeadOutputs,
  type PolicyGraphKind,
  presentNames,
  rmsNorm,
  splitHeads,
} from "./blocks.js";
import { serializeWithWeights, type WeightBytes } from "./serialize.js";
import { type ExternalWeights, externalInitializers, isHalfWeight, type OnnxWeightDtype } from "./weights-file.js";

/** ai.onnx opset of the graphs: 17 has LayerNormalization and loads in every onnxruntime since 1.13. */
export const POLICY_OPSET = 17;

export interface PolicyGraphOptions {
  /** What the graph computes. @default "causal-lm" */
  kind?: PolicyGraphKind;
  /** Graph name. @default the family's HF class name */
  name?: string;
  /** Storage of the weight matrices (vectors stay float32); float16 runs the products in float16. @default "float32" */
  weightDtype?: OnnxWeightDtype;
}

/** Cache geometry of a config: layers, kv heads and head width (what present/past tensors are sized by). */
export function cacheShape(config: ModelConfig): { layers: number; kvHeads: number; headDim: number; heads: number } {
  if (config.model_type === "gpt2") {
    return { layers: config.n_layer, kvHeads: config.n_head, heads: config.n_head, headDim: config.n_embd / config.n_head };
  }
  return { layers: config.num_hidden_layers, kvHeads: config.num_key_value_heads, heads: config.num_attention_heads, headDim: config.head_dim };
}

/** The weights of `config` from `weights`, checked by name, shape and type, in checkpoint order. */
export function policyWeights(config: ModelConfig, weights: ReadonlyMap<string, RawTensor>): WeightBytes[] {
  return paramShapes(config).map(([name, shape]) => {
    const t = weights.get(name);
    if (!t) throw new TypeError(`ONNX export: weight ${name} is missing`);
    if (t.shape.join() !== shape.join()) throw new TypeError(`ONNX export: weight ${name} has shape [${t.shape}], the config implies [${shape}]`);
    if (!(t.data instanceof Float32Array)) throw new TypeError(`ONNX export: weight ${name} must be float32`);
    return { name, dims: shape, data: t.data };
  });
}

function gpt2Body(g: GraphBuilder, c: GPT2Config, kind: PolicyGraphKind, half: boolean): void {
  const { n_head: H, n_embd: C, n_layer: L, layer_norm_epsilon: eps } = c;
  const hd = C / H;
  const inputs = declareInputs(g, kind, L, H, hd);
  const embedded = g.add(embed(g, "transformer.wte.weight", inputs.ids, half), embed(g, "transformer.wpe.weight", inputs.positions, half)); // (B, T, C)
  let x = g.reshape(embedded, [-1, C]); // (N, C)
  const split = g.constInt64([C, C, C]);
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    const h = layerNorm(g, x, `${p}.ln_1.weight`, `${p}.ln_1.bias`, eps);
    const qkv = conv1d(g, h, `${p}.attn.c_attn.weight`, `${p}.attn.c_attn.bias`, half); // (N, 3C)
    const [q, k, v] = g.nodeOutputs("Split", [qkv, split], { axis: 1 }, { outputCount: 3 }).map((t) => splitHeads(g, t, inputs.batchTime, H, hd)); // each (B, H, T, hd)
    const att = attention(g, q, k, v, inputs.bias, { heads: H, kvHeads: H, headDim: hd }, inputs.past?.[i], presentNames(kind, i));
    x = g.add(x, conv1d(g, att.y, `${p}.attn.c_proj.weight`, `${p}.attn.c_proj.bias`, half));
    const h2 = layerNorm(g, x, `${p}.ln_2.weight`, `${p}.ln_2.bias`, eps);
    let m = conv1d(g, h2, `${p}.mlp.c_fc.weight`, `${p}.mlp.c_fc.bias`, half); // (N, inner)
    m = c.activation_function === "gelu_new" ? geluTanh(g, m) : c.activation_function === "gelu" ? geluErf(g, m) : g.relu(m);
    x = g.add(x, conv1d(g, m, `${p}.mlp.c_proj.weight`, `${p}.mlp.c_proj.bias`, half));
  }
  const lnF = (y: string) => layerNorm(g, y, "transformer.ln_f.weight", "transformer.ln_f.bias", eps);
  lmHeadOutputs(g, kind, inputs, x, lnF, "transformer.wte.weight", c.vocab_size, C, half);
  if (kind !== "score") declarePresent(g, L, H, hd);
}

function llamaBody(g: GraphBuilder, c: LlamaConfig, kind: PolicyGraphKind, half: boolean): void {
  const { num_attention_heads: H, num_key_value_heads: KV, head_dim: hd, hidden_size: D, num_hidden_layers: L, rms_norm_eps: eps } = c;
  const inputs = declareInputs(g, kind, L, KV, hd);
  const attBias = (name: string) => (c.attention_bias ? name : undefined);
  const mlpBias = (name: string) => (c.mlp_bias ? name : undefined);
  // Rotary tables for these positions, as models/llama.ts: θ^(-2i/hd) in float32, each angle repeated for both halves.
  const invFreq = new Float32Array(hd / 2);
  for (let i = 0; i < hd / 2; i++) invFreq[i] = 1 / c.rope_theta ** ((2 * i) / hd);
  const angles = g.mul(g.unsqueeze(g.cast(inputs.positions, DataType.FLOAT), [2]), g.initializer("rotary_inv_freq", invFreq, [hd / 2])); // (B, T, hd/2)
  const full = g.unsqueeze(g.concat([angles, angles], 2), [1]); // (B, 1, T, hd)
  const cos = g.node("Cos", [full]);
  const sin = g.node("Sin", [full]);
  const halves = g.constInt64([hd / 2, hd / 2]);
  const rope = (x: string): string => {
    const [x1, x2] = g.nodeOutputs("Split", [x, halves], { axis: 3 }, { outputCount: 2 });
    const rotated = g.concat([g.neg(x2), x1], 3); // HF rotate_half
    return g.add(g.mul(x, cos), g.mul(rotated, sin));
  };
  let x = g.reshape(embed(g, "model.embed_tokens.weight", inputs.ids, half), [-1, D]); // (N, D)
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    const a = `${p}.self_attn`;
    const h = rmsNorm(g, x, `${p}.input_layernorm.weight`, eps);
    const bt = inputs.batchTime;
    const q = rope(splitHeads(g, linear(g, h, `${a}.q_proj.weight`, attBias(`${a}.q_proj.bias`), half), bt, H, hd)); // (B, H, T, hd)
    const k = rope(splitHeads(g, linear(g, h, `${a}.k_proj.weight`, attBias(`${a}.k_proj.bias`), half), bt, KV, hd)); // (B, KV, T, hd)
    const v = splitHeads(g, linear(g, h, `${a}.v_proj.weight`, attBias(`${a}.v_proj.bias`), half), bt, KV, hd); // (B, KV, T, hd)
    const att = attention(g, q, k, v, inputs.bias, { heads: H, kvHeads: KV, headDim: hd }, inputs.past?.[i], presentNames(kind, i));
    x = g.add(x, linear(g, att.y, `${a}.o_proj.weight`, undefined, half));
    const h2 = rmsNorm(g, x, `${p}.post_attention_layernorm.weight`, eps);
    const m = `${p}.mlp`;
    const gate = linear(g, h2, `${m}.gate_proj.weight`, mlpBias(`${m}.gate_proj.bias`), half); // (N, I)
    const up = linear(g, h2, `${m}.up_proj.weight`, mlpBias(`${m}.up_proj.bias`), half); // (N, I)
    x = g.add(x, linear(g, g.mul(g.mul(gate, g.sigmoid(gate)), up), `${m}.down_proj.weight`, mlpBias(`${m}.down_proj.bias`), half));
  }
  const finalNorm = (y: string) => rmsNorm(g, y, "model.norm.weight", eps);
  lmHeadOutputs(g, kind, inputs, x, finalNorm, c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", c.vocab_size, D, half);
  if (kind !== "score") declarePresent(g, L, KV, hd);
}

/**
 * The graph of `config` for `kind` without its weights: they are declared (so that nodes may use them) and left
 * for `serializePolicy` / `buildPolicyGraph` to add. The structure depends on the config only, so callers that
 * rebuild sessions for new weights can keep it.
 */
export function policyStructure(config: ModelConfig, options: PolicyGraphOptions = {}): ModelProto {
  const kind = options.kind ?? "causal-lm";
  const dtype = options.weightDtype ?? "float32";
  const family = config.model_type === "gpt2" ? "GPT2LMHeadModel" : "LlamaForCausalLM";
  const g = new GraphBuilder({ name: options.name ?? family, opset: POLICY_OPSET });
  const shapes = paramShapes(config);
  // Placeholders carry name and type only; their data is spliced in at serialization.
  for (const [name, dims] of shapes) {
    const dataType = isHalfWeight(dims, dtype) ? DataType.FLOAT16 : DataType.FLOAT;
    g.initializerTensor(create(TensorProtoSchema, { name, dims: dims.map((d) => BigInt(d)), dataType }));
  }
  if (config.model_type === "gpt2") gpt2Body(g, config, kind, dtype === "float16");
  else llamaBody(g, config, kind, dtype === "float16");
  const model = g.build({
    docString: `${family} exported by sppo (${kind})`,
    metadata: { "sppo.kind": kind, "sppo.config": JSON.stringify(config), "sppo.weight_dtype": dtype },
  });
  model.graph!.initializer.splice(0, shapes.length);
  return model;
}

/**
 * The ONNX bytes (what `model.onnx` holds) of a policy with `weights` (HF names → float32 tensors, e.g.
 * `modelTensors(model)`) as initializers. `structure` reuses a `policyStructure` of the same config and kind.
 * Throws a TypeError naming the weight when one is missing or misshapen.
 */
export function serializePolicy(config: ModelConfig, weights: ReadonlyMap<string, RawTensor>, options: PolicyGraphOptions & { structure?: ModelProto } = {}): Uint8Array {
  const checked = policyWeights(config, weights);
  return serializeWithWeights(options.structure ?? policyStructure(config, options), checked);
}

/**
 * The ONNX bytes of a policy whose weights are external data (weights-file.ts): the graph's structure with every
 * weight pointing at its bytes in `weights`' files. Small whatever the model's size; onnxruntime reads the weights
 * from `weights.folder` (session option `session.model_external_initializers_file_folder_path`, or a model file saved
 * in that folder). `structure` reuses a `policyStructure` of the same config, kind and weight dtype.
 */
export function externalPolicyBytes(config: ModelConfig, weights: ExternalWeights, options: PolicyGraphOptions & { structure?: ModelProto } = {}): Uint8Array {
  const structure = options.structure ?? policyStructure(config, options);
  const dtype = (structure.metadataProps.find((p) => p.key === "sppo.weight_dtype")?.value ?? "float32") as OnnxWeightDtype;
  for (const [name, t] of weights.tensors) {
    const expected = isHalfWeight(t.dims, dtype) ? DataType.FLOAT16 : DataType.FLOAT;
    if (t.dataType !== expected) throw new TypeError(`ONNX weights: ${name} is stored as type ${t.dataType}, the ${dtype} graph expects ${expected}`);
  }
  return toBinary(ModelProtoSchema, { ...structure, graph: { ...structure.graph!, initializer: [...externalInitializers(weights), ...structure.graph!.initializer] } });
}

/** The ONNX model of a policy as a message (for inspection and tests; `serializePolicy` is the fast way to bytes). */
export function buildPolicyGraph(config: ModelConfig, weights: ReadonlyMap<string, RawTensor>, options: PolicyGraphOptions = {}): ModelProto {
  const checked = policyWeights(config, weights);
  const model = policyStructure(config, options);
  model.graph!.initializer.unshift(...checked.map((w) => tensor(w.name, w.data, w.dims)));
  return model;
}
