"""PyTorch reference for scoring, the work bench/onnx.ts and bench/scale.ts measure on onnxruntime: the summed
log-probability of each row's response tokens under a GPT-2-style policy of the shape in MODEL.json (default
../shared/bench/reference-model.json, the same model as ../shared/bench/torch_reference.py), tied head, forward only,
batch B x 128 tokens (first 32 tokens prompt, masked). Prints one JSON line.
Usage: /usr/bin/python3 bench/torch_score.py [threads=2] [reps=5] [MODEL.json] [batch=16]
(Debian's python3-torch and libopenblas0-pthread)"""
import json, math, os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
cfg = json.load(open(sys.argv[3] if len(sys.argv) > 3 else os.path.join(here, '..', '..', 'shared', 'bench', 'reference-model.json')))
V, D, L, H, CTX = cfg['vocab_size'], cfg['d_model'], cfg['n_layers'], cfg['n_heads'], cfg['context']
B, T, PROMPT = int(sys.argv[4]) if len(sys.argv) > 4 else 16, 128, 32

class Block(nn.Module):
    """torch_reference.py's block (pre-LayerNorm, fused qkv, GELU MLP), without the cache."""
    def __init__(s):
        super().__init__(); s.ln1 = nn.LayerNorm(D); s.qkv = nn.Linear(D, 3 * D); s.proj = nn.Linear(D, D)
        s.ln2 = nn.LayerNorm(D); s.fc = nn.Linear(D, 4 * D); s.out = nn.Linear(4 * D, D)
    def forward(s, x, bias):
        B_, T_, _ = x.shape
        q, k, v = s.qkv(s.ln1(x)).split(D, dim=2)
        q, k, v = [t.view(B_, T_, H, D // H).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // H) + bias
        y = F.softmax(att, -1) @ v
        x = x + s.proj(y.transpose(1, 2).reshape(B_, T_, D))
        return x + s.out(F.gelu(s.fc(s.ln2(x)), approximate='tanh'))

class GPT(nn.Module):
    def __init__(s):
        super().__init__(); s.tok = nn.Embedding(V, D); s.pos = nn.Embedding(CTX, D)
        s.blocks = nn.ModuleList([Block() for _ in range(L)]); s.lnf = nn.LayerNorm(D)
    def forward(s, idx, mask):
        T_ = idx.shape[1]
        x = s.tok(idx) + s.pos(torch.arange(T_))
        causal = torch.ones(T_, T_, dtype=torch.bool).tril()
        bias = torch.zeros(idx.shape[0], 1, T_, T_).masked_fill(~(causal & mask[:, None, None, :].bool()), -1e9)
        for b in s.blocks: x = b(x, bias)
        return s.lnf(x) @ s.tok.weight.t()  # tied head, as GPT-2

m = GPT().eval()
ids = torch.randint(0, V, (B, T)); mask = torch.ones(B, T)
targets = ids[:, 1:]
resp = torch.zeros(B, T - 1); resp[:, PROMPT - 1:] = 1  # positions whose next token is a response token

@torch.no_grad()
def score():
    logp = F.log_softmax(m(ids, mask)[:, :-1], -1)
    return (logp.gather(-1, targets[..., None])[..., 0] * resp).sum(-1)

score()
times = []
for _ in range(REPS):
    t = time.perf_counter(); score(); times.append(time.perf_counter() - t)
best = min(times); median = sorted(times)[len(times) // 2]
print(json.dumps({"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "batch": B, "tokens": T,
  "score_tokens_per_s": round(B * T / median, 1), "best_tokens_per_s": round(B * T / best, 1), "score_ms": round(median * 1000, 1)}))
