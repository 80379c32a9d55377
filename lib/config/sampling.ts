/**
 * Sampling settings in the config: the fields of sppo.v1.SamplingParams (proto/sppo/v1/generator.proto) under their
 * JSON names, declared once here. `generator.sampling` (what a request's unset fields take) and `pipeline.sampling`
 * (what the loop asks for) are both this shape; the loop sends its section as a request's SamplingParams, the
 * generator fills a request's unset fields from its own, and the engines take the same fields (models/sample.ts
 * SampleOptions picks them from SamplingParams). `seed` is per request: the loop derives it from pipeline.seed.
 */
import { create } from "@bufbuild/protobuf";
import { z } from "zod";
import { type SamplingParams, SamplingParamsSchema } from "../../gen/sppo/v1/generator_pb.js";

/** The SamplingParams fields a config sets: all but the per-request seed. */
export type SamplingField = Exclude<keyof SamplingParams, "$typeName" | "$unknown" | "seed">;

/** One schema per SamplingParams field (a field added to the proto must be added here: `satisfies` checks it). */
const FIELDS = {
  /** Softmax temperature (0 = greedy). The official SPPO scripts use 0.7, the paper text 1.0. */
  temperature: z.number().min(0),
  /** Nucleus mass in (0, 1] (1 = off). The official SPPO scripts use 0.9, the paper text 1.0. */
  topP: z.number().gt(0).max(1),
  /** Keep only the k most likely tokens (0 = off). */
  topK: z.number().int().min(0),
  /** Tokens generated per sample, EOS included; the context length cuts it shorter when needed. */
  maxNewTokens: z.number().int().min(1),
  /** Stop a sample at the end-of-sequence token. */
  stopOnEos: z.boolean(),
} satisfies Record<SamplingField, z.ZodType>;

/** Every config-set field of SamplingParams, set. */
export type SamplingDefaults = Required<Pick<SamplingParams, SamplingField>>;

/** `generator.sampling`: what a GenerateRequest's unset SamplingParams fields take; every field has a value. */
export const generatorSamplingSchema = z
  .object({
    /** @default 0.7 (the official SPPO scripts) */
    temperature: FIELDS.temperature.default(0.7),
    /** @default 0.9 (the official SPPO scripts) */
    topP: FIELDS.topP.default(0.9),
    /** @default 0 (off) */
    topK: FIELDS.topK.default(0),
    /** @default 64 */
    maxNewTokens: FIELDS.maxNewTokens.default(64),
    /** @default true */
    stopOnEos: FIELDS.stopOnEos.default(true),
  })
  .strict();

/** `pipeline.sampling`: the SamplingParams of every Generate request the loop sends (with its own seed). */
export const loopSamplingSchema = z
  .object({
    /** @default 0.7 (the official SPPO scripts) */
    temperature: FIELDS.temperature.default(0.7),
    /** @default 0.9 (the official SPPO scripts) */
    topP: FIELDS.topP.default(0.9),
    /** @default 0 (off) */
    topK: FIELDS.topK.default(0),
    /** Longest response, in tokens. @default 32 */
    maxNewTokens: FIELDS.maxNewTokens.default(32),
    /** @default unset: the generator's generator.sampling.stopOnEos */
    stopOnEos: FIELDS.stopOnEos.optional(),
  })
  .strict();

/** Sampling settings as a config section holds them: SamplingParams fields. */
export type SamplingSettings = z.output<typeof loopSamplingSchema> | z.output<typeof generatorSamplingSchema>;

/** A config section's settings as the SamplingParams of a request, with the request's seed when given. */
export function samplingParams(settings: SamplingSettings, seed?: bigint): SamplingParams {
  return create(SamplingParamsSchema, seed === undefined ? settings : { ...settings, seed });
}
