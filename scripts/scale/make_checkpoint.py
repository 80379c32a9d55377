"""Makes a real-size model directory in the Hugging Face hub's own layout, with PyTorch and nothing from sppo, so that
sppo's loading, inference and memory can be checked at the sizes users bring (nothing is downloaded or committed;
weights are random, drawn on the fly with a seeded torch generator).

  /usr/bin/python3 scripts/scale/make_checkpoint.py --shape SHAPE --out DIR [--dtype f32|bf16] [--seed N]
      [--max-shard-gb G] [--reference]

SHAPE (the real models' shapes):
  gpt2-small      GPT-2 124M: vocab 50257, d 768, 12 layers, 12 heads; hub layout: keys WITHOUT `transformer.`,
                  `h.N.attn.bias` causal-mask buffers [1,1,1024,1024], tied head (no lm_head.weight)
  smollm-135m     SmolLM2-135M-shaped Llama: vocab 49152, d 576, 30 layers, 9 heads / 3 kv, tied
  qwen2.5-0.5b    Qwen2.5-0.5B-shaped Qwen2: vocab 151936, d 896, 24 layers, 14 heads / 2 kv, q/k/v biases, tied
  tinyllama-1.1b  TinyLlama-1.1B-shaped Llama: vocab 32000, d 2048, 22 layers, 32 heads / 4 kv, untied
Writes config.json, model.safetensors (or shards + model.safetensors.index.json past --max-shard-gb), and a
byte-level BPE tokenizer.json + tokenizer_config.json whose vocabulary fills the model's (256 byte tokens, then
merges of frequent English letter pairs and longer pieces, the family's special tokens at its ids).
The safetensors writer here follows the format's specification directly (8-byte little-endian header length, JSON
header, raw little-endian data) and streams one tensor at a time, so a 1.1B checkpoint needs one tensor's memory.
With --reference it also writes reference.json: summed log-probs of fixed (prompt, response) token-id pairs under an
independent PyTorch implementation of the family (float32), for scripts/scale/verify.ts to compare with sppo's
engines. Needs Debian's python3-torch only.
"""
import argparse, json, math, os, struct, sys
import torch

SHAPES = {
    "gpt2-small": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                       bos_token_id=50256, eos_token_id=50256, activation_function="gelu_new", layer_norm_epsilon=1e-5),
    "smollm-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, rms_norm_eps=1e-5,
                        rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
    "qwen2.5-0.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    "tinyllama-1.1b": dict(model_type="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}
ARCH = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def tensors(c):
    """(name, shape, init) in the hub checkpoint's names; init: 'normal', 'ones', 'zeros', 'mask'."""
    out = []
    if c["model_type"] == "gpt2":
        D, V, P = c["n_embd"], c["vocab_size"], c["n_positions"]
        out += [("wte.weight", [V, D], "normal"), ("wpe.weight", [P, D], "normal")]
        for i in range(c["n_layer"]):
            p = f"h.{i}"
            out += [(f"{p}.ln_1.weight", [D], "ones"), (f"{p}.ln_1.bias", [D], "zeros"),
                    (f"{p}.attn.bias", [1, 1, P, P], "mask"),
                    (f"{p}.attn.c_attn.weight", [D, 3 * D], "normal"), (f"{p}.attn.c_attn.bias", [3 * D], "zeros"),
                    (f"{p}.attn.c_proj.weight", [D, D], "normal"), (f"{p}.attn.c_proj.bias", [D], "zeros"),
                    (f"{p}.ln_2.weight", [D], "ones"), (f"{p}.ln_2.bias", [D], "zeros"),
                    (f"{p}.mlp.c_fc.weight", [D, 4 * D], "normal"), (f"{p}.mlp.c_fc.bias", [4 * D], "zeros"),
                    (f"{p}.mlp.c_proj.weight", [4 * D, D], "normal"), (f"{p}.mlp.c_proj.bias", [D], "zeros")]
        out += [("ln_f.weight", [D], "ones"), ("ln_f.bias", [D], "zeros")]
        return out
    D, V, I = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    H, KV = c["num_attention_heads"], c["num_key_value_heads"]
    hd = D // H
    out.append(("model.embed_tokens.weight", [V, D], "normal"))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out += [(f"{p}.input_layernorm.weight", [D], "ones"),
                (f"{p}.self_attn.q_proj.weight", [H * hd, D], "normal"), (f"{p}.self_attn.k_proj.weight", [KV * hd, D], "normal"),
                (f"{p}.self_attn.v_proj.weight", [KV * hd, D], "normal"), (f"{p}.self_attn.o_proj.weight", [D, H * hd], "normal")]
        if c["model_type"] == "qwen2":
            out += [(f"{p}.self_attn.q_proj.bias", [H * hd], "normal"), (f"{p}.self_attn.k_proj.bias", [KV * hd], "normal"),
                    (f"{p}.self_attn.v_proj.bias", [KV * hd], "normal")]
        out += [(f"{p}.post_attention_layernorm.weight", [D], "ones"),
                (f"{p}.mlp.gate_proj.weight", [I, D], "normal"), (f"{p}.mlp.up_proj.weight", [I, D], "normal"),
                (f"{p}.mlp.down_proj.weight", [D, I], "normal")]
    out.append(("model.norm.weight", [D], "ones"))
    if not c.get("tie_word_embeddings"):
        out.append(("lm_head.weight", [V, D], "normal"))
    return out


def make(init, shape, gen, dtype):
    if init == "ones":
        return torch.ones(shape, dtype=torch.float32).to(dtype)
    if init == "zeros":
        return torch.zeros(shape, dtype=torch.float32).to(dtype)
    if init == "mask":  # GPT-2's causal-mask buffer, float as in the hub's file
        n = shape[-1]
        return torch.tril(torch.ones(n, n, dtype=torch.float32)).view(shape)
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(dtype)


def st_dtype(t):
    return {torch.float32: "F32", torch.bfloat16: "BF16"}[t.dtype]


def write_safetensors(path, specs, produce):
    """specs: [(name, shape, dtype_name, nbytes)]; produce(name) -> tensor, called in order, written at once."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dt, nbytes in specs:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header).encode("utf8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, dt, nbytes in specs:
            t = produce(name).contiguous()
            raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
            assert len(raw) == nbytes, name
            f.write(raw)
    os.replace(tmp, path)
    return offset


def bpe_tokenizer(c, family):
    """A byte-level BPE tokenizer.json whose vocabulary fills vocab_size, specials at the config's ids."""
    V = c["vocab_size"]
    specials = {"gpt2": {50256: "<|endoftext|>"}, "llama": {0: "<unk>", 1: "<s>", 2: "</s>"},
                "qwen2": {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>"}}[family]
    # GPT-2's byte -> printable character table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    byte_chars = [chr(x) for x in cs]
    vocab, merges, ids = {}, [], iter(i for i in range(V) if i not in specials)
    for ch in byte_chars:
        vocab[ch] = next(ids)
    # Merges: every piece so far (starting from single letters and "Ġ"+letter) grown by one letter, level by level,
    # until the vocabulary is full. Each merge joins two tokens already in the vocabulary, as BPE requires.
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    space = byte_chars[32]
    room = V - len(specials)

    def add(left, right):
        tok = left + right
        if len(vocab) < room and tok not in vocab:
            vocab[tok] = next(ids)
            merges.append(f"{left} {right}")
            return tok
        return None

    frontier = [l for l in letters] + [t for t in (add(space, l) for l in letters) if t]
    while len(vocab) < room and frontier:
        frontier = [t for t in (add(p, l) for p in frontier for l in letters) if t]
    while len(vocab) < V - len(specials):  # never reached for real vocabularies; keeps the table full
        vocab[f"<unused{len(vocab)}>"] = next(ids)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
             for i, s in sorted(specials.items())]
    for i, s in specials.items():
        vocab[s] = i
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
    }, specials


# ---- independent float32 forward passes, for reference log-probs ----

def gpt2_forward(c, W, ids):
    D, H = c["n_embd"], c["n_head"]
    T = ids.shape[1]
    x = W["wte.weight"][ids] + W["wpe.weight"][torch.arange(T)]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(c["n_layer"]):
        p = f"h.{i}"
        h = torch.nn.functional.layer_norm(x, (D,), W[f"{p}.ln_1.weight"], W[f"{p}.ln_1.bias"], c["layer_norm_epsilon"])
        q, k, v = (h @ W[f"{p}.attn.c_attn.weight"] + W[f"{p}.attn.c_attn.bias"]).split(D, -1)
        q, k, v = [t.view(1, T, H, D // H).transpose(1, 2) for t in (q, k, v)]
        a = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + a.transpose(1, 2).reshape(1, T, D) @ W[f"{p}.attn.c_proj.weight"] + W[f"{p}.attn.c_proj.bias"]
        h = torch.nn.functional.layer_norm(x, (D,), W[f"{p}.ln_2.weight"], W[f"{p}.ln_2.bias"], c["layer_norm_epsilon"])
        m = torch.nn.functional.gelu(h @ W[f"{p}.mlp.c_fc.weight"] + W[f"{p}.mlp.c_fc.bias"], approximate="tanh")
        x = x + m @ W[f"{p}.mlp.c_proj.weight"] + W[f"{p}.mlp.c_proj.bias"]
    x = torch.nn.functional.layer_norm(x, (D,), W["ln_f.weight"], W["ln_f.bias"], c["layer_norm_epsilon"])
    return x @ W["wte.weight"].T


def llama_forward(c, W, ids):
    D, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, T = D // H, ids.shape[1]
    inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = lambda t: torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
    norm = lambda t, w: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]) * w
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    x = W["model.embed_tokens.weight"][ids]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = norm(x, W[f"{p}.input_layernorm.weight"])
        lin = lambda name, t: t @ W[f"{p}.{name}.weight"].T + (W[f"{p}.{name}.bias"] if f"{p}.{name}.bias" in W else 0)
        q = lin("self_attn.q_proj", h).view(1, T, H, hd).transpose(1, 2)
        k = lin("self_attn.k_proj", h).view(1, T, KV, hd).transpose(1, 2)
        v = lin("self_attn.v_proj", h).view(1, T, KV, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        a = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~mask, float("-inf")).softmax(-1) @ v
        x = x + lin("self_attn.o_proj", a.transpose(1, 2).reshape(1, T, D))
        h = norm(x, W[f"{p}.post_attention_layernorm.weight"])
        x = x + lin("mlp.down_proj", torch.nn.functional.silu(lin("mlp.gate_proj", h)) * lin("mlp.up_proj", h))
    x = norm(x, W["model.norm.weight"])
    return x @ (W["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else W["lm_head.weight"]).T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shard-gb", type=float, default=0, help="shard past this many GB (0: one file)")
    ap.add_argument("--reference", action="store_true")
    a = ap.parse_args()
    c = dict(SHAPES[a.shape])
    family = c["model_type"]
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    os.makedirs(a.out, exist_ok=True)
    specs = tensors(c)
    gen = torch.Generator().manual_seed(a.seed)
    kept = {}

    def produce(name):
        shape, init = next((s, i) for n, s, i in specs if n == name)
        t = make(init, shape, gen, torch.float32 if init == "mask" else dtype)
        if a.reference:
            kept[name] = t.float()
        return t

    sized = []
    for name, shape, init in specs:
        elt = 4 if (init == "mask" or dtype == torch.float32) else 2
        sized.append((name, shape, "F32" if elt == 4 else "BF16", elt * math.prod(shape)))
    limit = a.max_shard_gb * 1e9
    shards, cur = [[]], 0
    for s in sized:
        if limit and cur and cur + s[3] > limit:
            shards.append([]); cur = 0
        shards[-1].append(s); cur += s[3]
    for f in os.listdir(a.out):
        if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")):
            os.remove(os.path.join(a.out, f))
    total = 0
    if len(shards) == 1:
        total = write_safetensors(os.path.join(a.out, "model.safetensors"), sized, produce)
    else:
        weight_map = {}
        for i, group in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors(os.path.join(a.out, name), group, produce)
            weight_map.update({s[0]: name for s in group})
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    config = {"architectures": [ARCH[family]], **c, "torch_dtype": "bfloat16" if dtype == torch.bfloat16 else "float32"}
    json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    tok, specials = bpe_tokenizer(c, family)
    json.dump(tok, open(os.path.join(a.out, "tokenizer.json"), "w"))
    bos, eos = specials.get(c["bos_token_id"]), specials.get(c["eos_token_id"])
    json.dump({"bos_token": bos, "eos_token": eos, "model_max_length": c.get("n_positions", c.get("max_position_embeddings"))},
              open(os.path.join(a.out, "tokenizer_config.json"), "w"), indent=2)
    params = sum(math.prod(s) for n, s, i in specs if i != "mask")
    summary = {"dir": a.out, "shape": a.shape, "params": params, "weight_bytes": total, "files": len(shards)}
    if a.reference:
        forward = gpt2_forward if family == "gpt2" else llama_forward
        g = torch.Generator().manual_seed(a.seed + 1)
        pairs = []
        for P, R in ((5, 7), (12, 20), (1, 31)):
            prompt = [c["bos_token_id"]] + torch.randint(0, c["vocab_size"], (P,), generator=g).tolist()
            response = torch.randint(0, c["vocab_size"], (R,), generator=g).tolist()
            ids = torch.tensor([prompt + response])
            with torch.no_grad():
                logp = forward(c, kept, ids)[0, :-1].log_softmax(-1)
            lp = sum(float(logp[len(prompt) - 1 + j, tok_]) for j, tok_ in enumerate(response))
            pairs.append({"prompt": prompt, "response": response, "logprob": lp})
        json.dump({"engine": f"torch {torch.__version__}", "dtype": "float32", "pairs": pairs}, open(os.path.join(a.out, "reference.json"), "w"))
        summary["reference_pairs"] = len(pairs)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
