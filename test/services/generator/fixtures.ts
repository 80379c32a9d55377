/** Tiny policies in the real format for the generator's tests, and an engine wrapper that tests can hold and count. */
import { PolicyTokenizer, wordTokenizerJson } from "../../../models/index.js";
import { createModel, gpt2Config, saveModel } from "../../../models/index.js";
import { join } from "node:path";
import { Generator } from "../../../gen/sppo/v1/generator_pb.js";
import { Optimizer } from "../../../gen/sppo/v1/optimizer_pb.js";
import { Code, RpcError } from "../../../lib/errors.js";
import { type Client, createClient } from "../../../lib/grpc/client.js";
import { mount, type RunningServer } from "../../../lib/grpc/serve.js";
import { unimplemented } from "../../../lib/grpc/unimplemented.js";
import { weightStream } from "../../../lib/weights/index.js";
import type { EngineLoader, PolicyEngine } from "../../../services/generator/engine.js";
import { createGeneratorService, type GeneratorServiceConfig } from "../../../services/generator/server.js";
import { serveForTest } from "../../lib/grpc/harness.js";
import { loadTfjsEngine } from "../../../services/generator/tfjs-engine.js";

export const SPECIALS = ["<pad>", "<bos>", "<eos>", "<sep>", "<unk>"];
export const WORDS = ["the", "cat", "dog", "is", "kind", "dull", "tell", "me", "about", "a", "bird", "sings", "runs", "fast", "slow", "and"];
/** Context length of the tiny policies. */
export const CONTEXT = 32;

/** A word-level tokenizer (an HF WordPiece model over whole words) with a chat template, as the default policy has. */
export function tinyTokenizer(): PolicyTokenizer {
  const json = wordTokenizerJson(SPECIALS, WORDS);
  const config = {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<bos>",
    eos_token: "<eos>",
    pad_token: "<pad>",
    unk_token: "<unk>",
    chat_template: "{{ bos_token }}{% for message in messages %}{{ ' ' + message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ ' <sep>' }}{% endif %}",
  };
  return new PolicyTokenizer(json, config);
}

/** Writes a tiny random GPT-2 policy (weights from `seed`) with its tokenizer into `dir`. */
export function writeTinyPolicy(dir: string, seed: number): void {
  const tokenizer = tinyTokenizer();
  const model = createModel(
    gpt2Config({
      vocab_size: tokenizer.vocabSize,
      n_positions: CONTEXT,
      n_embd: 16,
      n_layer: 2,
      n_head: 2,
      bos_token_id: tokenizer.bosId ?? null,
      eos_token_id: tokenizer.eosId ?? null,
      pad_token_id: tokenizer.padId ?? null,
    }),
    undefined,
    seed,
  );
  try {
    saveModel(dir, model, tokenizer);
  } finally {
    model.dispose();
  }
}

/** Writes tiny policy versions 0–4 under `<root>/published/v<v>` (version v has weights from seed v + 1); returns their directories. */
export function publishTinyVersions(root: string): Map<number, string> {
  const published = new Map<number, string>();
  for (const v of [0, 1, 2, 3, 4]) {
    const dir = join(root, "published", `v${v}`);
    writeTinyPolicy(dir, v + 1);
    published.set(v, dir);
  }
  return published;
}

/** What a fake optimizer's GetWeights consults on every call (tests change what the functions return between tests). */
export interface GetWeightsHooks {
  /** Called first, with the requested version. */
  onPull?(version: number): void;
  /** When it returns a promise, GetWeights waits for it before streaming. */
  gate?(): Promise<void> | undefined;
  /** When it returns an index, the chunk with that index (0 = the first chunk, of config.json) has a byte flipped. */
  corruptChunk?(): number | undefined;
}

/**
 * An Optimizer on a loopback server whose only method is GetWeights, streaming the `published` directories with
 * lib/weights' weightStream; a version never published is NOT_FOUND.
 */
export function serveFakeOptimizer(published: ReadonlyMap<number, string>, hooks: GetWeightsHooks = {}): Promise<RunningServer> {
  return serveForTest([
    mount(Optimizer, {
      ...unimplemented(Optimizer, "only GetWeights in this test"),
      async *getWeights(request, context) {
        hooks.onPull?.(request.version);
        const gate = hooks.gate?.();
        if (gate) await gate;
        const dir = published.get(request.version);
        if (!dir) throw new RpcError(Code.NOT_FOUND, `version: ${request.version} was never published`);
        let i = 0;
        for await (const m of weightStream(dir, { version: request.version, iteration: request.version }, { chunkBytes: request.chunkBytes, signal: context.signal })) {
          if (m.kind.case === "chunk" && i++ === hooks.corruptChunk?.()) {
            const data = Buffer.from(m.kind.value.data);
            data[data.length - 1] ^= 0x40;
            yield { kind: { case: "chunk", value: { ...m.kind.value, data } } };
          } else yield m;
        }
      },
    }),
  ]);
}

/** `inner` with its sample and score runs replaced by `runs` where given (each defaults to `inner`'s own). */
export function wrapEngine(inner: PolicyEngine, runs: Partial<Pick<PolicyEngine, "sample" | "score">>): PolicyEngine {
  return {
    name: inner.name,
    contextLength: inner.contextLength,
    vocabSize: inner.vocabSize,
    family: inner.family,
    parameters: inner.parameters,
    sample: runs.sample ?? ((promptIds, o) => inner.sample(promptIds, o)),
    score: runs.score ?? ((pairs, o) => inner.score(pairs, o)),
    dispose: () => inner.dispose(),
  };
}

/** Counts engine runs and can hold them until released, so tests see queueing and batching deterministically. */
export class EngineProbe {
  sampleCalls: number[][][] = [];
  scoreCalls = 0;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  private entered: (() => void) | undefined;

  /** Holds every run from now on; resolves `entered` when the first held run starts. */
  hold(): { entered: Promise<void> } {
    this.gate = new Promise<void>((resolve) => {
      this.open = resolve;
    });
    const entered = new Promise<void>((resolve) => {
      this.entered = resolve;
    });
    return { entered };
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  /** An engine loader: the tfjs engine on cpu, with every run counted and passing the gate. */
  loader(): EngineLoader {
    return async (dir, options) => {
      const inner: PolicyEngine = await loadTfjsEngine(dir, { ...options, tfjsBackend: "cpu" });
      const probe = this;
      return wrapEngine(inner, {
        async sample(promptIds, o) {
          probe.sampleCalls.push(promptIds);
          if (probe.gate) {
            probe.entered?.();
            await probe.gate;
          }
          return inner.sample(promptIds, o);
        },
        async score(pairs, o) {
          probe.scoreCalls++;
          if (probe.gate) {
            probe.entered?.();
            await probe.gate;
          }
          return inner.score(pairs, o);
        },
      });
    };
  }
}

/** A generator service on a real loopback gRPC server, its client, and `stop()` for all three. */
export interface ServedGenerator {
  service: Awaited<ReturnType<typeof createGeneratorService>>;
  server: RunningServer;
  client: Client<typeof Generator>;
  stop(): Promise<void>;
}

export async function serveGenerator(config: GeneratorServiceConfig, options: { engineLoader?: EngineLoader } = {}): Promise<ServedGenerator> {
  const service = await createGeneratorService(config, options);
  const server = await serveForTest([mount(Generator, service.implementation)]);
  const client = createClient(Generator, `127.0.0.1:${server.port}`);
  return {
    service,
    server,
    client,
    async stop() {
      client.close();
      await server.shutdown();
      await service.close();
    },
  };
}
