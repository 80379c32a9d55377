/**
 * The optimizer's published policy versions: version 0 is the base model directory, version t the policy after
 * iteration t, written atomically (lib/atomic.ts) as a real model directory under the run's policy folder (runs.ts):
 * `policyDir/v<t>`, or `policyDir/runs/<run id>/v<t>` for a named run; each described by
 * the SHA-256 of its files in manifest order (lib/weights/manifest.ts). The records are plain JSON: checkpoints keep
 * them, so a resumed optimizer serves the same versions.
 */
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { type PolicyVersion, PolicyVersionSchema } from "../../gen/sppo/v1/common_pb.js";
import { writeDirAtomic } from "../../lib/atomic.js";
import { Code, RpcError } from "../../lib/errors.js";
import { log } from "../../lib/log.js";
import { directoryManifestSync, type WeightFile } from "../../lib/weights/manifest.js";
import { type CausalLM, type PolicyTokenizer, saveModel } from "../../models/index.js";

/** One published version, as checkpoints record it. */
export interface VersionRecord {
  version: number;
  iteration: number;
  sha256: string;
  family: string;
  /** Parameter count, as a decimal string (JSON has no 64-bit integers). */
  parameters: string;
  dir: string;
  /** The run that trained it (absent for the base and for the anonymous run). */
  runId?: string;
  runFingerprint?: string;
}

/** A policy version's files, for GetWeights. */
export interface VersionFiles {
  policy: PolicyVersion;
  dir: string;
  files: WeightFile[];
}

/** Describes the model directory `dir` (holding `model`'s weights) as `version`; `sha256` when already known. */
export function describeVersion(dir: string, version: number, iteration: number, model: CausalLM, sha256?: string): VersionRecord {
  let parameters = 0;
  for (const p of model.params.values()) parameters += p.size;
  return { version, iteration, sha256: sha256 ?? directoryManifestSync(dir).sha256, family: model.config.model_type, parameters: String(parameters), dir };
}

/** A record as the wire message. */
export function versionMessage(v: VersionRecord): PolicyVersion {
  return create(PolicyVersionSchema, {
    version: v.version,
    iteration: v.iteration,
    sha256: v.sha256,
    family: v.family,
    parameters: BigInt(v.parameters),
    runId: v.runId ?? "",
    runFingerprint: v.runFingerprint ?? "",
  });
}

export class PolicyVersions {
  constructor(
    private readonly policyDir: string,
    private list: VersionRecord[],
  ) {
    if (list.length === 0) throw new RangeError("a version list starts with the base policy (version 0)");
  }

  /** Every record, oldest first (what a checkpoint keeps). */
  get records(): VersionRecord[] {
    return this.list;
  }

  latest(): VersionRecord {
    return this.list[this.list.length - 1];
  }

  /** The versions as messages, oldest first. */
  messages(): PolicyVersion[] {
    return this.list.map(versionMessage);
  }

  /** A version's directory and files, or NOT_FOUND. */
  files(version: number): VersionFiles {
    const record = this.list.find((v) => v.version === version);
    if (!record) throw new RpcError(Code.NOT_FOUND, `policy version ${version} does not exist (latest is ${this.latest().version})`);
    return { policy: versionMessage(record), dir: record.dir, files: directoryManifestSync(record.dir, [], false).files };
  }

  /** Saves `model` as version `iteration` of `run` (replacing one of that number) and records it. */
  publish(iteration: number, model: CausalLM, tokenizer: PolicyTokenizer | undefined, run: { runId: string; fingerprint: string }): VersionRecord {
    const dir = join(this.policyDir, `v${iteration}`);
    writeDirAtomic(dir, (tmp) => saveModel(tmp, model, tokenizer));
    const record: VersionRecord = describeVersion(dir, iteration, iteration, model);
    // Only named runs are recorded, so that an anonymous run's records (and checkpoints) stay as they always were.
    if (run.runId !== "") Object.assign(record, { runId: run.runId, runFingerprint: run.fingerprint });
    this.list = [...this.list.filter((v) => v.version !== iteration), record];
    log.info({ version: record.version, sha256: record.sha256, dir }, "policy version published");
    return record;
  }
}
