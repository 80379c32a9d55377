"""Writes the PyTorch fixtures for test/models/: a tiny random GPT-2 and a tiny random Llama (grouped-query
attention, untied LM head), each as a model directory (config.json + model.safetensors) plus the logits that an
independent PyTorch implementation (below; no `transformers` needed) computes for fixed input ids.

Run from the repository root:  /usr/bin/python3 scripts/torch/make_fixtures.py
(Debian: apt-get install -y python3-torch libopenblas0-pthread). Output: test/models/fixtures/{gpt2,llama}/.
The safetensors files are written by hand here too (struct + json), independently of models/safetensors.ts.
"""
import json, math, os, struct
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "models", "fixtures")
torch.manual_seed(1234)


def save_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - (8 + len(raw)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def rnd(*shape, std=0.2):
    return torch.randn(*shape) * std


# ---- GPT-2 -------------------------------------------------------------------------------------------------------
def gpt2_fixture():
    cfg = dict(model_type="gpt2", vocab_size=61, n_positions=24, n_embd=32, n_layer=2, n_head=4, n_inner=None,
               layer_norm_epsilon=1e-5, activation_function="gelu_new", bos_token_id=0, eos_token_id=1)
    C, L, H, V, P = cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"], cfg["n_positions"]
    w = {"transformer.wte.weight": rnd(V, C), "transformer.wpe.weight": rnd(P, C)}
    for i in range(L):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = 1 + rnd(C, std=0.1); w[p + "ln_1.bias"] = rnd(C, std=0.1)
        w[p + "attn.c_attn.weight"] = rnd(C, 3 * C); w[p + "attn.c_attn.bias"] = rnd(3 * C, std=0.05)
        w[p + "attn.c_proj.weight"] = rnd(C, C); w[p + "attn.c_proj.bias"] = rnd(C, std=0.05)
        w[p + "ln_2.weight"] = 1 + rnd(C, std=0.1); w[p + "ln_2.bias"] = rnd(C, std=0.1)
        w[p + "mlp.c_fc.weight"] = rnd(C, 4 * C); w[p + "mlp.c_fc.bias"] = rnd(4 * C, std=0.05)
        w[p + "mlp.c_proj.weight"] = rnd(4 * C, C); w[p + "mlp.c_proj.bias"] = rnd(C, std=0.05)
    w["transformer.ln_f.weight"] = 1 + rnd(C, std=0.1); w["transformer.ln_f.bias"] = rnd(C, std=0.1)

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"], cfg["layer_norm_epsilon"])

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    def forward(ids):
        B, T = ids.shape
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(L):
            p = f"transformer.h.{i}."
            qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = [t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2)]
            att = (q @ k.transpose(-1, -2)) / math.sqrt(C // H)
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = gelu_new(ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        return ln(x, "transformer.ln_f") @ w["transformer.wte.weight"].T

    return cfg, w, forward


# ---- Llama -------------------------------------------------------------------------------------------------------
def llama_fixture():
    cfg = dict(model_type="llama", vocab_size=53, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-6,
               rope_theta=500.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    D, L, H, KV, V, I = (cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "num_key_value_heads", "vocab_size", "intermediate_size"))
    hd = D // H
    w = {"model.embed_tokens.weight": rnd(V, D, std=0.5)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + rnd(D, std=0.1)
        w[p + "self_attn.q_proj.weight"] = rnd(H * hd, D); w[p + "self_attn.k_proj.weight"] = rnd(KV * hd, D)
        w[p + "self_attn.v_proj.weight"] = rnd(KV * hd, D); w[p + "self_attn.o_proj.weight"] = rnd(D, H * hd)
        w[p + "post_attention_layernorm.weight"] = 1 + rnd(D, std=0.1)
        w[p + "mlp.gate_proj.weight"] = rnd(I, D); w[p + "mlp.up_proj.weight"] = rnd(I, D); w[p + "mlp.down_proj.weight"] = rnd(D, I)
    w["model.norm.weight"] = 1 + rnd(D, std=0.1)
    w["lm_head.weight"] = rnd(V, D)

    def rms(x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["rms_norm_eps"]) * w[name + ".weight"]

    def rope(x, pos):  # x (B, h, T, hd); rotate pairs (i, i + hd/2) as HF's rotate_half
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = pos[:, None].double() * inv[None, :]  # (T, hd/2)
        cos, sin = ang.cos().float(), ang.sin().float()
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    def forward(ids):
        B, T = ids.shape
        pos = torch.arange(T)
        x = w["model.embed_tokens.weight"][ids]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(L):
            p = f"model.layers.{i}."
            h = rms(x, p + "input_layernorm")
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
            q, k = rope(q, pos), rope(k, pos)
            k = k.repeat_interleave(H // KV, dim=1); v = v.repeat_interleave(H // KV, dim=1)
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(~causal, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + y @ w[p + "self_attn.o_proj.weight"].T
            h = rms(x, p + "post_attention_layernorm")
            g = h @ w[p + "mlp.gate_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        return rms(x, "model.norm") @ w["lm_head.weight"].T

    return cfg, w, forward


def write(name, fixture):
    cfg, w, forward = fixture
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_safetensors(os.path.join(d, "model.safetensors"), w)
    V = cfg["vocab_size"]
    ids = torch.tensor([[0, 5, 17, 42, 3, 9, 28, 11], [0, 33, 2, 2, 50, 7, 14, 19]]) % V
    with torch.no_grad():
        logits = forward(ids)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"ids": ids.tolist(), "shape": list(logits.shape),
                   "logits": [round(float(v), 7) for v in logits.flatten()]}, f)
    print(name, "logits", list(logits.shape), "params", sum(t.numel() for t in w.values()))


if __name__ == "__main__":  # make_grad_fixtures.py imports the models above
    write("gpt2", gpt2_fixture())
    write("llama", llama_fixture())
