/**
 * Makes the tiny default policy of the embedded default task: a small GPT-2 pretrained on text generated from
 * lib/default-task/language.ts, saved to assets/policy/ in the real format (config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json), plus assets/prompts/default.jsonl.
 *
 * Run:  node --import tsx scripts/make-default-policy.ts [--steps N] [--seed S] [--out DIR]
 * Deterministic given the seed on the same backend (wasm, forced here: its float rounding differs from cpu's).
 *
 * Prompt format (rendered by the chat template in tokenizer_config.json):
 *   <bos> {prompt} <sep> {response} <eos>
 * e.g. "<bos> tell me about the cat . <sep> the cat is kind and dull . <eos>". The tokenizer is word-level (an HF
 * WordPiece model whose vocabulary holds whole words, so that @huggingface/tokenizers and Python both read it).
 * Responses are drawn from RESPONSE_TEMPLATES with distinct adjectives drawn uniformly from GOOD ∪ BAD ∪ NEUTRAL,
 * so the base policy mixes adjective groups; SPPO later shifts it toward GOOD.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import {
  Adam,
  clipGradNorm,
  GPT2LMHeadModel,
  initBackend,
  makeBatch,
  PolicyTokenizer,
  sampleText,
  saveModel,
  sequenceLogProbs,
  valueAndGrads,
  warmupLinearSchedule,
  wordTokenizerJson,
} from "../models/index.js";
import { ALL_ADJECTIVES, PROMPT_TEMPLATES, RESPONSE_TEMPLATES, SUBJECTS } from "../lib/default-task/language.js";
import { createRng, type Rng } from "../lib/rng.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Openers that multiply the prompt set (20 subjects × 5 templates × 5 openers = 500 distinct prompts). */
export const PROMPT_OPENERS = ["", "please ", "now , ", "hey , ", "ok , "] as const;
const SPECIALS = ["<pad>", "<bos>", "<eos>", "<sep>", "<unk>"] as const;

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "600" },
    seed: { type: "string", default: "20240507" },
    out: { type: "string", default: join(ROOT, "assets") },
  },
});
const steps = Number(args.steps);
const seed = Number(args.seed);

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng.next() * items.length)];
}

/** A response with distinct adjectives drawn uniformly from all groups. */
function response(rng: Rng, subject: string): string {
  const template = pick(rng, RESPONSE_TEMPLATES);
  const adjectives: string[] = [];
  while (adjectives.length < 3) {
    const a = pick(rng, ALL_ADJECTIVES);
    if (!adjectives.includes(a)) adjectives.push(a);
  }
  return template.replace("{s}", subject).replace("{a}", adjectives[0]).replace("{b}", adjectives[1]).replace("{c}", adjectives[2]);
}

function prompt(rng: Rng, subject: string): string {
  return pick(rng, PROMPT_OPENERS) + pick(rng, PROMPT_TEMPLATES).replace("{s}", subject);
}

/** Every word the language uses, split as the tokenizer's pre-tokenizer splits them. */
function vocabulary(): string[] {
  const words = new Set<string>();
  const add = (text: string) => {
    for (const w of text.replace(/\{[a-z]\}/g, " ").match(/[a-z]+|[^a-z\s]/g) ?? []) words.add(w);
  };
  [...PROMPT_TEMPLATES, ...RESPONSE_TEMPLATES, ...PROMPT_OPENERS, ...SUBJECTS, ...ALL_ADJECTIVES].forEach(add);
  return [...words].sort();
}

function tokenizerFiles(words: string[]): { json: Record<string, unknown>; config: Record<string, unknown> } {
  const json = wordTokenizerJson(SPECIALS, words);
  const config = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<bos>",
    eos_token: "<eos>",
    pad_token: "<pad>",
    unk_token: "<unk>",
    sep_token: "<sep>",
    model_max_length: 64,
    clean_up_tokenization_spaces: true,
    chat_template:
      "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ ' ' + message['content'] }}{% elif message['role'] == 'assistant' %}{{ ' <sep> ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ ' <sep>' }}{% endif %}",
  };
  return { json, config };
}

const backend = await initBackend("wasm");
const words = vocabulary();
const files = tokenizerFiles(words);
const tokenizer = new PolicyTokenizer(files.json, files.config);
const model = new GPT2LMHeadModel(
  {
    vocab_size: tokenizer.vocabSize,
    n_positions: 64,
    n_embd: 96,
    n_layer: 2,
    n_head: 4,
    bos_token_id: tokenizer.bosId!,
    eos_token_id: tokenizer.eosId!,
    pad_token_id: tokenizer.padId!,
  },
  undefined,
  seed,
);
const nParams = [...model.params.values()].reduce((s, p) => s + p.size, 0);
process.stderr.write(`backend ${backend.name}, vocab ${tokenizer.vocabSize}, params ${nParams}\n`);

const rng = createRng(seed, 1);
const batchSize = 48;
const schedule = warmupLinearSchedule(3e-3, Math.round(steps * 0.05), steps);
const optimizer = new Adam({ weightDecay: 0.01 });
const started = performance.now();
for (let step = 0; step < steps; step++) {
  // Sequences "<bos> prompt <sep> response <eos>", trained on every token after <bos>.
  const pairs = Array.from({ length: batchSize }, () => {
    const subject = pick(rng, SUBJECTS);
    const text = `${tokenizer.formatPrompt(prompt(rng, subject))} ${response(rng, subject)} <eos>`;
    const ids = tokenizer.encode(text);
    return { prompt: ids.slice(0, 1), response: ids.slice(1) };
  });
  const batch = makeBatch(pairs, tokenizer.padId);
  const tokens = pairs.reduce((s, p) => s + p.response.length, 0);
  const { value, grads } = valueAndGrads(model, () => sequenceLogProbs(model, batch).sum().div(-tokens) as tf.Scalar);
  const { grads: clipped } = clipGradNorm(grads, 1);
  optimizer.apply(model.params, clipped, schedule(step));
  if (step % 100 === 0 || step === steps - 1) {
    const secs = (performance.now() - started) / 1000;
    process.stderr.write(`step ${step} loss/token ${value.dataSync()[0].toFixed(4)} lr ${schedule(step).toExponential(2)} ${secs.toFixed(0)}s\n`);
  }
  tf.dispose([value, grads, clipped]);
  batch.dispose();
}
optimizer.dispose();

const policyDir = join(args.out, "policy");
saveModel(policyDir, model, tokenizer);
// The model card states what this is and how it was made.
writeFileSync(
  join(policyDir, "README.md"),
  `# Default policy of the embedded task\n\nA ${nParams}-parameter GPT-2 (${model.config.n_layer} layers, d_model ${model.config.n_embd}, ${model.config.n_head} heads) pretrained for ${steps} steps (batch ${batchSize}, seed ${seed}, backend ${backend.name}) by\n\`node --import tsx scripts/make-default-policy.ts\` on text generated from lib/default-task/language.ts.\n\nFormat: \`<bos> {prompt} <sep> {response} <eos>\` (the chat template in tokenizer_config.json renders the prompt part).\nResponses in the corpus use adjectives drawn uniformly from the GOOD, BAD and NEUTRAL groups.\n`,
);

// Prompts: every subject × template × opener, shuffled by the seed; the first 400 are written.
const all = SUBJECTS.flatMap((s) => PROMPT_TEMPLATES.flatMap((t) => PROMPT_OPENERS.map((o) => o + t.replace("{s}", s))));
const order = createRng(seed, 2);
for (let i = all.length - 1; i > 0; i--) {
  const j = Math.floor(order.next() * (i + 1));
  [all[i], all[j]] = [all[j], all[i]];
}
mkdirSync(join(args.out, "prompts"), { recursive: true });
writeFileSync(join(args.out, "prompts", "default.jsonl"), all.slice(0, 400).map((p) => `${JSON.stringify({ prompt: p })}\n`).join(""));

// A look at what it says, and how often it is on-subject and grammatical (matches a response template).
const shapes = RESPONSE_TEMPLATES.map((t) => new RegExp(`^${t.replace(/[.?]/g, "\\$&").replace("{s}", "(\\w+)").replace(/\{[abc]\}/g, "(\\w+)")}$`));
const evalPrompts = SUBJECTS.map((s) => `describe the ${s}.`);
const samples = sampleText({ model, tokenizer, dir: policyDir }, evalPrompts, { k: 8, seed: 7, maxNewTokens: 24 });
let ok = 0;
let total = 0;
const groups = { good: 0, bad: 0, neutral: 0 };
samples.forEach((rows, i) => {
  for (const r of rows) {
    total++;
    const text = r.text.replace(/ ([.,?])/g, "$1").replace(/,/g, " ,").trim();
    const words_ = text.split(/[\s.]+/);
    if (r.finished && shapes.some((re) => re.test(text)) && words_.includes(SUBJECTS[i])) ok++;
    for (const w of words_) {
      if (ALL_ADJECTIVES.indexOf(w) >= 0) groups[ALL_ADJECTIVES.indexOf(w) < 10 ? "good" : ALL_ADJECTIVES.indexOf(w) < 20 ? "bad" : "neutral"]++;
    }
  }
});
for (const r of samples.slice(0, 3)) for (const s of r.slice(0, 2)) process.stderr.write(`  ${JSON.stringify(s.text)} logprob ${s.logprob.toFixed(2)}\n`);
process.stderr.write(`grammatical and on-subject: ${ok}/${total}; adjectives ${JSON.stringify(groups)}\n`);
model.dispose();
