/**
 * Builds the default preference oracle of `npm start` — a small PairRM-form pairwise ONNX model with a word-level
 * tokenizer over the default task's language — deterministically, with the project's own code and no downloads:
 *
 *   node --import tsx scripts/make-default-oracle.ts [OUT_DIR]        (default OUT_DIR: assets/oracle)
 *
 * The weights are constructed, not trained. The graph reads real tokens: it finds the three PairRM segments
 * (<|source|> prompt, <|candidate1|> first, <|candidate2|> second) with cumulative sums over the marker tokens,
 * sums embedding rows over each segment, and computes
 *
 *   score(y) = good·#GOOD(y) − bad·#BAD(y) + onSubject·[y names a subject of the prompt] − offSubject·#(other subjects y names)
 *   logits   = score(first) − score(second) + positionBias
 *
 * The subject terms are a bilinear interaction between the prompt's and the candidate's segment features. The
 * position bias, a stand-in for the first-position bias real pairwise models have, cancels in the oracle's
 * two-order combination. `buildRewardModel` makes the scalar (Bradley-Terry) counterpart used by tests.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { ModelProto } from "onnx-buf";
import { DataType, GraphBuilder, serializeModel } from "../lib/onnx/index.js";
import { BAD, GOOD, NEUTRAL, PROMPT_TEMPLATES, RESPONSE_TEMPLATES, SUBJECTS } from "../lib/default-task/language.js";

/** Special tokens, in id order from 0. */
export const SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<|source|>", "<|candidate1|>", "<|candidate2|>"] as const;

/** The word vocabulary: every word and punctuation mark of the language, sorted, after the special tokens. */
export function defaultVocabulary(): string[] {
  const words = new Set<string>([...SUBJECTS, ...GOOD, ...BAD, ...NEUTRAL]);
  for (const template of [...PROMPT_TEMPLATES, ...RESPONSE_TEMPLATES]) {
    for (const piece of template.replace(/\{[a-z]\}/g, " ").match(/\w+|[^\w\s]+/g) ?? []) words.add(piece);
  }
  return [...SPECIAL_TOKENS, ...[...words].sort()];
}

/**
 * A Hugging Face tokenizer.json: WordLevel model, lowercase, Whitespace pre-tokenizer (\w+ | [^\w\s]+), and
 * DeBERTa's template ([CLS] $A [SEP], pair [CLS] $A [SEP] $B [SEP]). Loads in tokenizers.js and in Python.
 */
export function buildTokenizerJson(vocabulary: readonly string[] = defaultVocabulary()): Record<string, unknown> {
  const id = (token: string) => vocabulary.indexOf(token);
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content) => ({
      id: id(content),
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: "Lowercase" },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "[CLS]", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "[SEP]", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: "[SEP]", type_id: 1 } },
      ],
      special_tokens: {
        "[CLS]": { id: "[CLS]", ids: [id("[CLS]")], tokens: ["[CLS]"] },
        "[SEP]": { id: "[SEP]", ids: [id("[SEP]")], tokens: ["[SEP]"] },
      },
    },
    decoder: null,
    model: { type: "WordLevel", vocab: Object.fromEntries(vocabulary.map((t, i) => [t, i])), unk_token: "[UNK]" },
  };
}

/** The weights of the constructed score. */
export interface ScoreWeights {
  /** Per GOOD adjective. @default 1 */
  good: number;
  /** Per BAD adjective (subtracted). @default 1 */
  bad: number;
  /** When the response names a subject of the prompt. @default 1 */
  onSubject: number;
  /** Per other subject the response names (subtracted). @default 1 */
  offSubject: number;
  /** Added to every pairwise logit (first-position bias; cancels in the oracle). @default 0.25 */
  positionBias: number;
}

export const DEFAULT_WEIGHTS: ScoreWeights = { good: 1, bad: 1, onSubject: 1, offSubject: 1, positionBias: 0.25 };

/** Embedding tables over the vocabulary: adjective groups (GOOD, BAD, NEUTRAL) and subjects (one-hot). */
function embeddingTables(vocabulary: readonly string[]): { adjectives: Float32Array; subjects: Float32Array } {
  const V = vocabulary.length;
  const adjectives = new Float32Array(V * 3); // (V, 3)
  const subjects = new Float32Array(V * SUBJECTS.length); // (V, S)
  const groups: readonly (readonly string[])[] = [GOOD, BAD, NEUTRAL];
  for (const [v, token] of vocabulary.entries()) {
    for (const [g, group] of groups.entries()) if (group.includes(token)) adjectives[v * 3 + g] = 1;
    const s = (SUBJECTS as readonly string[]).indexOf(token);
    if (s >= 0) subjects[v * SUBJECTS.length + s] = 1;
  }
  return { adjectives, subjects };
}

/** Adds the shared inputs and tables; returns helpers that score a segment mask. */
function scoringGraph(g: GraphBuilder, vocabulary: readonly string[], weights: ScoreWeights) {
  const ids = g.input("input_ids", DataType.INT64, ["batch", "length"]);
  const attention = g.cast(g.input("attention_mask", DataType.INT64, ["batch", "length"]), DataType.FLOAT); // (B, L)
  const tables = embeddingTables(vocabulary);
  const adjTable = g.initializer("adjective_embedding", tables.adjectives, [vocabulary.length, 3]);
  const subjTable = g.initializer("subject_embedding", tables.subjects, [vocabulary.length, SUBJECTS.length]);
  const adjEmb = g.gather(adjTable, ids); // (B, L, 3)
  const subjEmb = g.gather(subjTable, ids); // (B, L, S)
  const adjWeights = g.initializer("adjective_weights", Float32Array.from([weights.good, -weights.bad, 0]), [3, 1]);
  const one = g.constFloat(1);
  const indicator = (token: string) => g.cast(g.equal(ids, g.constInt64(vocabulary.indexOf(token))), DataType.FLOAT); // (B, L)
  /** Sum of embedding rows over a segment mask (B, L) → (B, D). */
  const segmentSum = (segment: string, emb: string) => g.squeeze(g.matMul(g.unsqueeze(g.mul(segment, attention), [1]), emb), [1]);
  /** Subjects named in a segment, each counted once: (B, S) in {0, 1}. */
  const namedSubjects = (segment: string) => g.min(segmentSum(segment, subjEmb), one);
  /** score(segment) given the prompt's named subjects, (B). */
  const score = (segment: string, promptSubjects: string) => {
    const adjective = g.squeeze(g.matMul(segmentSum(segment, adjEmb), adjWeights), [1]); // (B)
    const named = namedSubjects(segment); // (B, S)
    const on = g.reduceSum(g.mul(named, promptSubjects), [1]); // (B)
    const off = g.sub(g.reduceSum(named, [1]), on); // (B)
    return g.sub(g.add(adjective, g.mul(on, g.constFloat(weights.onSubject))), g.mul(off, g.constFloat(weights.offSubject)));
  };
  return { indicator, namedSubjects, score };
}

/** The pairwise model: logits (batch) = score(candidate 1) − score(candidate 2) + positionBias. */
export function buildPairwiseModel(vocabulary: readonly string[] = defaultVocabulary(), weights: ScoreWeights = DEFAULT_WEIGHTS): ModelProto {
  const g = new GraphBuilder({ name: "sppo_default_pairwise_oracle", opset: 17 });
  const { indicator, namedSubjects, score } = scoringGraph(g, vocabulary, weights);
  // Segment masks from running counts of the markers: source = after <|source|> and before <|candidate1|>, …
  const afterSource = g.cumSum(indicator("<|source|>"), 1);
  const afterFirst = g.cumSum(indicator("<|candidate1|>"), 1);
  const afterSecond = g.cumSum(indicator("<|candidate2|>"), 1);
  const source = g.sub(afterSource, afterFirst); // (B, L)
  const first = g.sub(afterFirst, afterSecond); // (B, L)
  const promptSubjects = namedSubjects(source); // (B, S)
  const logits = g.add(g.sub(score(first, promptSubjects), score(afterSecond, promptSubjects)), g.constFloat(weights.positionBias));
  g.output("logits", DataType.FLOAT, ["batch"], logits);
  return g.build({
    producerName: "sppo scripts/make-default-oracle.ts",
    docString: "Constructed (not trained) PairRM-form pairwise preference model over the default task's language.",
    metadata: { kind: "pairwise", weights: JSON.stringify(weights) },
  });
}

/** The scalar reward model over [CLS] prompt [SEP] response [SEP]: rewards (batch, 1) = score(response). */
export function buildRewardModel(vocabulary: readonly string[] = defaultVocabulary(), weights: ScoreWeights = DEFAULT_WEIGHTS): ModelProto {
  const g = new GraphBuilder({ name: "sppo_default_reward_model", opset: 17 });
  const { indicator, namedSubjects, score } = scoringGraph(g, vocabulary, weights);
  const seps = g.cumSum(indicator("[SEP]"), 1); // 0 in the prompt, 1 in the response, 2 after it
  const prompt = g.cast(g.equal(seps, g.constFloat(0)), DataType.FLOAT);
  const response = g.cast(g.equal(seps, g.constFloat(1)), DataType.FLOAT);
  g.output("rewards", DataType.FLOAT, ["batch", 1], g.unsqueeze(score(response, namedSubjects(prompt)), [1]));
  return g.build({
    producerName: "sppo scripts/make-default-oracle.ts",
    docString: "Constructed (not trained) scalar reward model over the default task's language.",
    metadata: { kind: "reward", weights: JSON.stringify(weights) },
  });
}

/** Writes model.onnx, tokenizer.json and oracle_config.json into `dir`. */
export function writeOracleDir(dir: string, kind: "pairwise" | "reward", options: { weights?: ScoreWeights; config?: Record<string, unknown> } = {}): void {
  const vocabulary = defaultVocabulary();
  mkdirSync(dir, { recursive: true });
  const model = kind === "pairwise" ? buildPairwiseModel(vocabulary, options.weights) : buildRewardModel(vocabulary, options.weights);
  writeFileSync(join(dir, "model.onnx"), serializeModel(model));
  writeFileSync(join(dir, "tokenizer.json"), `${JSON.stringify(buildTokenizerJson(vocabulary), null, 1)}\n`);
  const config = {
    kind,
    model_name: kind === "pairwise" ? "sppo-default-pairwise (constructed, PairRM form)" : "sppo-default-reward (constructed)",
    source_max_length: 1224,
    candidate_max_length: 412,
    ...options.config,
  };
  writeFileSync(join(dir, "oracle_config.json"), `${JSON.stringify(config, null, 2)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const dir = resolve(process.argv[2] ?? "assets/oracle");
  writeOracleDir(dir, "pairwise");
  process.stdout.write(`wrote ${dir}/model.onnx, tokenizer.json, oracle_config.json\n`);
}
