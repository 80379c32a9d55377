/**
 * Training graphs: one onnxruntime run computes a micro-batch's loss, its per-row log-probs and the gradient of the
 * loss with respect to every parameter (forward and a hand-written backward pass, blocks.ts). The weights are graph
 * inputs under their HF names, so an optimizer step needs no new session: the update runs in JS (optim.ts) and the
 * next run reads the new arrays.
 *
 * Inputs: the parameters; input_ids [B, T] int64, attention_mask [B, T] int64 (right-padded rows, models/batch.ts's
 * layout), targets [B, T] int64, response_mask [B, T] float; the loss's inputs (loss.ts).
 * Outputs: `loss` (), `logprob` [B], `grad.<name>` for every parameter but the token embedding, whose gradient the
 * caller completes from `embedding_rows_grad` [B·T, D] (the gradient of each looked-up row; a scatter-add over
 * input_ids that train-step.ts runs in order, so it is deterministic, which onnxruntime's parallel ScatterND with
 * reduction is not). A tied embedding's head part is in `grad.<embedding>`; untied, that output is absent.
 */
import type { ModelProto } from "onnx-buf";
import { DataType, type GraphBuilder, GraphBuilder as Builder } from "../../lib/onnx/index.js";
import type { GPT2Config, LlamaConfig, ModelConfig } from "../config.js";
import { paramShapes } from "../io.js";
import { DIMS, declareInputs, type GraphInputs } from "../onnx/blocks.js";
import {
  type Activation,
  activationForward,
  attentionBackward,
  attentionForward,
  conv1dBackward,
  GradSink,
  layerNormBackward,
  layerNormForward,
  linearBackward,
  MS_DOMAIN,
  mergeHeads,
  mergeQkv,
  rmsNormBackward,
  rmsNormForward,
  splitHeads,
  splitQkv,
} from "./blocks.js";
import { lossHead, type TrainLoss } from "./loss.js";

/** ai.onnx opset of the training graphs (LayerNormalization with its Mean/InvStdDev outputs needs 17). */
export const TRAIN_OPSET = 17;

/** Name of the output holding the gradient of each embedding row looked up. */
export const EMBEDDING_ROWS_GRAD = "embedding_rows_grad";

/** The token-embedding parameter of a config. */
export function embeddingParam(config: ModelConfig): string {
  return config.model_type === "gpt2" ? "transformer.wte.weight" : "model.embed_tokens.weight";
}

/**
 * The LM head on the residual stream x (N, D): logits, log-softmax, the picked log-probs summed per row; then the
 * loss and the way back to dx. Adds the head's gradient to `grads`.
 */
function headAndLoss(g: GraphBuilder, grads: GradSink, inputs: GraphInputs, x: string, head: string, loss: TrainLoss): string {
  const { batch, sequence } = DIMS;
  const targets = g.input("targets", DataType.INT64, [batch, sequence]);
  const responseMask = g.input("response_mask", DataType.FLOAT, [batch, sequence]);
  const logits = g.gemm(x, head, undefined, { transB: true }); // (N, V)
  const logp = g.node("LogSoftmax", [logits], { axis: -1 }); // (N, V)
  const target = g.reshape(targets, [-1, 1]); // (N, 1)
  const picked = g.node("GatherElements", [logp, target], { axis: 1 }); // (N, 1)
  const rowMask = g.node("Reshape", [g.mul(g.node("Reshape", [picked, inputs.batchTime]), responseMask), inputs.batchTime]); // (B, T)
  g.node("ReduceSum", [rowMask, g.constInt64([1])], { keepdims: 0 }, { outputs: ["logprob"] }); // (B)
  g.output("logprob", DataType.FLOAT, [batch]);
  const top = lossHead(g, loss, "logprob");
  g.output("loss", DataType.FLOAT, [], top.loss);
  // d logprob[b] / d logits[n, :] = mask[n]·(onehot(target[n]) − softmax(logits[n])).
  const dPicked = g.reshape(g.mul(g.unsqueeze(top.dlogprob, [1]), responseMask), [-1, 1]); // (N, 1)
  const spread = g.mul(g.exp(logp), g.neg(dPicked)); // (N, V): −dPicked·softmax
  const atTarget = g.mul(dPicked, g.sub(g.constFloat(1), g.exp(picked))); // (N, 1)
  const dLogits = g.node("ScatterElements", [spread, target, atTarget], { axis: 1 }); // one index per row: no race
  grads.add(head, g.gemm(dLogits, x, undefined, { transA: true })); // (V, D)
  return g.matMul(dLogits, head); // (N, D)
}

function gpt2Graph(g: GraphBuilder, c: GPT2Config, loss: TrainLoss, grads: GradSink): void {
  const { n_head: H, n_embd: C, n_layer: L, layer_norm_epsilon: eps } = c;
  const hd = C / H;
  const heads = { heads: H, kvHeads: H, headDim: hd };
  const act = c.activation_function as Activation;
  const inputs = declareInputs(g, "score", L, H, hd);
  const wte = "transformer.wte.weight";
  const wpe = "transformer.wpe.weight";
  const embedded = g.add(g.gather(wte, inputs.ids), g.gather(wpe, inputs.positions)); // (B, T, C)
  let x = g.reshape(embedded, [-1, C]); // (N, C)
  const saved = [];
  for (let i = 0; i < L; i++) {
    const p = `transformer.h.${i}`;
    const x0 = x;
    const ln1 = layerNormForward(g, x0, `${p}.ln_1.weight`, `${p}.ln_1.bias`, eps);
    const qkv = g.gemm(ln1.y, `${p}.attn.c_attn.weight`, `${p}.attn.c_attn.bias`); // (N, 3C)
    const [q, k, v] = splitQkv(g, qkv, inputs.batchTime, H, hd); // each (B, H, T, hd)
    const att = attentionForward(g, q, k, v, inputs.bias, heads);
    const x1 = g.add(x0, g.gemm(att.y, `${p}.attn.c_proj.weight`, `${p}.attn.c_proj.bias`));
    const ln2 = layerNormForward(g, x1, `${p}.ln_2.weight`, `${p}.ln_2.bias`, eps);
    const u = g.gemm(ln2.y, `${p}.mlp.c_fc.weight`, `${p}.mlp.c_fc.bias`); // (N, inner)
    const m = activationForward(g, act, u);
    x = g.add(x1, g.gemm(m.y, `${p}.mlp.c_proj.weight`, `${p}.mlp.c_proj.bias`));
    saved.push({ p, x0, ln1, att, x1, ln2, m });
  }
  const lnF = layerNormForward(g, x, "transformer.ln_f.weight", "transformer.ln_f.bias", eps);
  let dx = headAndLoss(g, grads, inputs, lnF.y, wte, loss);
  dx = layerNormBackward(g, grads, dx, x, lnF, "transformer.ln_f.weight", "transformer.ln_f.bias");
  for (let i = L - 1; i >= 0; i--) {
    const { p, x0, ln1, att, x1, ln2, m } = saved[i];
    const dm = conv1dBackward(g, grads, dx, m.y, `${p}.mlp.c_proj.weight`, `${p}.mlp.c_proj.bias`);
    const du = g.mul(dm, m.slope);
    const dh2 = conv1dBackward(g, grads, du, ln2.y, `${p}.mlp.c_fc.weight`, `${p}.mlp.c_fc.bias`);
    const dx1 = g.add(dx, layerNormBackward(g, grads, dh2, x1, ln2, `${p}.ln_2.weight`, `${p}.ln_2.bias`));
    const dy = conv1dBackward(g, grads, dx1, att.y, `${p}.attn.c_proj.weight`, `${p}.attn.c_proj.bias`);
    const d = attentionBackward(g, dy, inputs.batchTime, att.saved, heads);
    const dqkv = mergeQkv(g, d.dq, d.dk, d.dv, C); // (N, 3C)
    const dh = conv1dBackward(g, grads, dqkv, ln1.y, `${p}.attn.c_attn.weight`, `${p}.attn.c_attn.bias`);
    dx = g.add(dx1, layerNormBackward(g, grads, dh, x0, ln1, `${p}.ln_1.weight`, `${p}.ln_1.bias`));
  }
  embeddingOutputs(g, dx, C);
  // Positions are 0..T-1 in every row: wpe's gradient is the batch sum, padded with zero rows to n_positions.
  const perPosition = g.reduceSum(g.node("Reshape", [dx, g.concat([inputs.batchTime, g.constInt64([C])], 0)]), [0]); // (T, C)
  const T = g.node("Shape", [inputs.ids], { start: 1, end: 2 }); // [T]
  const pads = g.concat([g.constInt64([0, 0]), g.sub(g.constInt64([c.n_positions]), T), g.constInt64([0])], 0); // [0, 0, P − T, 0]
  grads.add(wpe, g.node("Pad", [perPosition, pads]));
}

function embeddingOutputs(g: GraphBuilder, dx: string, width: number): void {
  g.output(EMBEDDING_ROWS_GRAD, DataType.FLOAT, ["rows", width], dx);
}

function llamaGraph(g: GraphBuilder, c: LlamaConfig, loss: TrainLoss, grads: GradSink): void {
  const { num_attention_heads: H, num_key_value_heads: KV, head_dim: hd, hidden_size: D, num_hidden_layers: L, rms_norm_eps: eps } = c;
  const heads = { heads: H, kvHeads: KV, headDim: hd };
  const inputs = declareInputs(g, "score", L, KV, hd);
  const attBias = (name: string) => (c.attention_bias ? name : undefined);
  const mlpBias = (name: string) => (c.mlp_bias ? name : undefined);
  // Rotary tables as models/llama.ts: θ^(-2i/hd) in float32, each angle repeated for both halves.
  const invFreq = new Float32Array(hd / 2);
  for (let i = 0; i < hd / 2; i++) invFreq[i] = 1 / c.rope_theta ** ((2 * i) / hd);
  const angles = g.mul(g.unsqueeze(g.cast(inputs.positions, DataType.FLOAT), [2]), g.initializer("rotary_inv_freq", invFreq, [hd / 2])); // (1, T, hd/2)
  const full = g.unsqueeze(g.concat([angles, angles], 2), [1]); // (1, 1, T, hd)
  const cos = g.node("Cos", [full]);
  const sin = g.node("Sin", [full]);
  const halves = g.constInt64([hd / 2, hd / 2]);
  // rotate_half([x1, x2]) = [−x2, x1]; its transpose maps [z1, z2] to [z2, −z1].
  const rope = (x: string): string => {
    const [x1, x2] = g.nodeOutputs("Split", [x, halves], { axis: 3 }, { outputCount: 2 });
    return g.add(g.mul(x, cos), g.mul(g.concat([g.neg(x2), x1], 3), sin));
  };
  const ropeBackward = (dy: string): string => {
    const [z1, z2] = g.nodeOutputs("Split", [g.mul(dy, sin), halves], { axis: 3 }, { outputCount: 2 });
    return g.add(g.mul(dy, cos), g.concat([z2, g.neg(z1)], 3));
  };
  const embed = "model.embed_tokens.weight";
  let x = g.reshape(g.gather(embed, inputs.ids), [-1, D]); // (N, D)
  const saved = [];
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    const a = `${p}.self_attn`;
    const m = `${p}.mlp`;
    const x0 = x;
    const n1 = rmsNormForward(g, x0, `${p}.input_layernorm.weight`, eps);
    const proj = (name: string) => g.gemm(n1.y, `${a}.${name}.weight`, attBias(`${a}.${name}.bias`), { transB: true });
    const q = rope(splitHeads(g, proj("q_proj"), inputs.batchTime, H, hd)); // (B, H, T, hd)
    const k = rope(splitHeads(g, proj("k_proj"), inputs.batchTime, KV, hd)); // (B, KV, T, hd)
    const v = splitHeads(g, proj("v_proj"), inputs.batchTime, KV, hd); // (B, KV, T, hd)
    const att = attentionForward(g, q, k, v, inputs.bias, heads);
    const x1 = g.add(x0, g.gemm(att.y, `${a}.o_proj.weight`, undefined, { transB: true }));
    const n2 = rmsNormForward(g, x1, `${p}.post_attention_layernorm.weight`, eps);
    const gate = g.gemm(n2.y, `${m}.gate_proj.weight`, mlpBias(`${m}.gate_proj.bias`), { transB: true }); // (N, I)
    const up = g.gemm(n2.y, `${m}.up_proj.weight`, mlpBias(`${m}.up_proj.bias`), { transB: true }); // (N, I)
    const sig = g.sigmoid(gate);
    const silu = g.mul(gate, sig);
    const act = g.mul(silu, up);
    x = g.add(x1, g.gemm(act, `${m}.down_proj.weight`, mlpBias(`${m}.down_proj.bias`), { transB: true }));
    saved.push({ p, a, m, x0, n1, att, n2, gate, up, sig, silu, act });
  }
  const nF = rmsNormForward(g, x, "model.norm.weight", eps);
  let dx = headAndLoss(g, grads, inputs, nF.y, c.tie_word_embeddings ? embed : "lm_head.weight", loss);
  dx = rmsNormBackward(g, grads, dx, nF, "model.norm.weight");
  for (let i = L - 1; i >= 0; i--) {
    const { p, a, m, n1, att, n2, gate, up, sig, silu, act } = saved[i];
    const dAct = linearBackward(g, grads, dx, act, `${m}.down_proj.weight`, mlpBias(`${m}.down_proj.bias`));
    // silu(g)·up: d/dup = silu, d/dg = up·σ(g)·(1 + g·(1 − σ(g))).
    const dUp = g.mul(dAct, silu);
    const dGate = g.mul(g.mul(dAct, up), g.mul(sig, g.add(g.constFloat(1), g.mul(gate, g.sub(g.constFloat(1), sig)))));
    const dn2 = g.add(
      linearBackward(g, grads, dGate, n2.y, `${m}.gate_proj.weight`, mlpBias(`${m}.gate_proj.bias`)),
      linearBackward(g, grads, dUp, n2.y, `${m}.up_proj.weight`, mlpBias(`${m}.up_proj.bias`)),
    );
    const dx1 = g.add(dx, rmsNormBackward(g, grads, dn2, n2, `${p}.post_attention_layernorm.weight`));
    const dy = linearBackward(g, grads, dx1, att.y, `${a}.o_proj.weight`);
    const d = attentionBackward(g, dy, inputs.batchTime, att.saved, heads);
    const back = (dh: string, n: number, name: string) =>
      linearBackward(g, grads, mergeHeads(g, dh, n * hd), n1.y, `${a}.${name}.weight`, attBias(`${a}.${name}.bias`));
    const dn1 = g.node("Sum", [back(ropeBackward(d.dq), H, "q_proj"), back(ropeBackward(d.dk), KV, "k_proj"), back(d.dv, KV, "v_proj")]);
    dx = g.add(dx1, rmsNormBackward(g, grads, dn1, n1, `${p}.input_layernorm.weight`));
  }
  embeddingOutputs(g, dx, D);
}

/** The training graph of `config` with `loss` at its top; weights are inputs (no initializers). */
export function trainGraph(config: ModelConfig, loss: TrainLoss): ModelProto {
  const g = new Builder({ name: `${config.model_type}-train-${loss}`, opset: TRAIN_OPSET, extraOpsets: { [MS_DOMAIN]: 1 } });
  const shapes = new Map(paramShapes(config));
  for (const [name, dims] of shapes) g.input(name, DataType.FLOAT, dims);
  const grads = new GradSink();
  if (config.model_type === "gpt2") gpt2Graph(g, config, loss, grads);
  else llamaGraph(g, config, loss, grads);
  grads.emit(g, shapes);
  return g.build({ docString: `sppo training graph (${config.model_type}, ${loss})`, metadata: { "sppo.kind": "train", "sppo.loss": loss } });
}
