"""Writes PyTorch gradient fixtures for the training paths (test/models/onnx-train/gradients.test.ts): for the tiny
GPT-2 and Llama of test/models/fixtures/, the per-row response log-probs of a fixed batch of (prompt, response)
pairs, the four preference losses on them, and the gradient of the `sppo` and `dpo` losses with respect to every
weight, computed in float64 by autograd over this directory's independent PyTorch models (make_fixtures.py), with
nothing from sppo.

Run from the repository root:  /usr/bin/python3 scripts/torch/make_grad_fixtures.py
Output: test/models/fixtures/{gpt2,llama}/grads.json (batch, losses, log-probs) and grads.safetensors (one tensor
"<loss>/<weight name>" per loss and weight, float32).

Each row runs on its own (no padding), and its log-prob is the sum over its response tokens of
log softmax(logits at the previous position)[token]. The first half of the rows are the chosen responses, the
second half their rejected partners. Losses (lib/sppo/losses.ts, times SCALE; β = 1/η):
  sppo       mean_i (Δ_i − η(P̂_i − ½))²                    Δ = log-prob − ref
  sppo_hard  mean_pairs (Δ_w − η/2)² + (Δ_l + η/2)²
  dpo        mean_pairs −log σ(β(Δ_w − Δ_l))
  ipo        mean_pairs (Δ_w − Δ_l − η/2)²
"""
import json, os, struct
import torch
import torch.nn.functional as F

from make_fixtures import gpt2_fixture, llama_fixture, save_safetensors

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "models", "fixtures")

# The batch of the test (rows of different lengths).
PAIRS = [([0, 5, 17], [9, 9, 4, 1]), ([0, 8], [30, 12, 1]), ([0, 3, 3, 3], [7]), ([0], [11, 12, 13, 14, 15, 16, 2])]
REF = [-8.0, -7.5, -9.0, -12.0]
WIN_RATE = [0.9, 0.2, 0.6, 0.3]
ETA = 5.0
SCALE = 0.75
GRAD_LOSSES = ["sppo", "dpo"]


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf8"))
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", name
        a, b = meta["data_offsets"]
        data = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32)
        out[name] = data.reshape(meta["shape"]).clone()
    return out


def losses(logprob):
    delta = logprob - torch.tensor(REF, dtype=torch.float64)
    half = len(PAIRS) // 2
    w, l = delta[:half], delta[half:]
    win = torch.tensor(WIN_RATE, dtype=torch.float64)
    return {
        "sppo": ((delta - ETA * (win - 0.5)) ** 2).mean() * SCALE,
        "sppo_hard": ((w - ETA / 2) ** 2 + (l + ETA / 2) ** 2).mean() * SCALE,
        "dpo": F.softplus(-(w - l) / ETA).mean() * SCALE,
        "ipo": ((w - l - ETA / 2) ** 2).mean() * SCALE,
    }


def write(name, fixture):
    _, w, forward = fixture  # the model's weights are replaced by the committed ones below
    d = os.path.join(FIXTURES, name)
    for key, value in read_safetensors(os.path.join(d, "model.safetensors")).items():
        w[key] = value.double().requires_grad_(True)
    params = {key: w[key] for key in sorted(w)}

    def logprobs():
        rows = []
        for prompt, response in PAIRS:
            ids = torch.tensor([prompt + response])
            lp = F.log_softmax(forward(ids)[0], -1)  # (T, V)
            rows.append(sum(lp[t - 1, ids[0, t]] for t in range(len(prompt), ids.shape[1])))
        return torch.stack(rows)

    values = {k: float(v) for k, v in losses(logprobs()).items()}
    grads = {}
    for kind in GRAD_LOSSES:
        g = torch.autograd.grad(losses(logprobs())[kind], list(params.values()))
        grads.update({f"{kind}/{key}": t.float() for key, t in zip(params, g)})
    with open(os.path.join(d, "grads.json"), "w") as f:
        json.dump({"pairs": [{"prompt": p, "response": r} for p, r in PAIRS], "ref": REF, "win_rate": WIN_RATE,
                   "eta": ETA, "scale": SCALE, "logprobs": [float(v) for v in logprobs()], "losses": values,
                   "grad_losses": GRAD_LOSSES}, f, indent=1)
    save_safetensors(os.path.join(d, "grads.safetensors"), grads)
    print(name, "losses", values, "gradients", len(grads))


torch.manual_seed(0)
write("gpt2", gpt2_fixture())
write("llama", llama_fixture())
