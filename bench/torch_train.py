"""PyTorch's train step alone, as ../shared/bench/torch_reference.py measures it (same model: pre-LayerNorm GPT-2 block,
fused qkv, GELU MLP, separate head; cross-entropy; the JSON's optimizer, lr 1e-4), timed per step in wall-clock
and in this process's CPU time. CPU time is what a loaded machine distorts least on one thread (a thread that waits
for a core spends no CPU), so bench/train.ts compares one-thread routes by it too. Prints one JSON line.
Usage: /usr/bin/python3 bench/torch_train.py [threads=1] [reps=3] [MODEL.json=../shared/bench/reference-model.json]
(Debian's python3-torch and libopenblas0-pthread)"""
import json, math, os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.manual_seed(0)
here = os.path.dirname(os.path.abspath(__file__))
cfg = json.load(open(sys.argv[3] if len(sys.argv) > 3 else os.path.join(here, '..', '..', 'shared', 'bench', 'reference-model.json')))
V, D, L, H, CTX = cfg['vocab_size'], cfg['d_model'], cfg['n_layers'], cfg['n_heads'], cfg['context']


class Block(nn.Module):
    """torch_reference.py's block, without the sampling cache."""
    def __init__(s):
        super().__init__(); s.ln1 = nn.LayerNorm(D); s.qkv = nn.Linear(D, 3 * D); s.proj = nn.Linear(D, D)
        s.ln2 = nn.LayerNorm(D); s.fc = nn.Linear(D, 4 * D); s.out = nn.Linear(4 * D, D)

    def forward(s, x):
        B, T, _ = x.shape
        q, k, v = [t.view(B, T, H, D // H).transpose(1, 2) for t in s.qkv(s.ln1(x)).split(D, dim=2)]
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(D // H)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float('-inf'))
        x = x + s.proj((F.softmax(att, -1) @ v).transpose(1, 2).reshape(B, T, D))
        return x + s.out(F.gelu(s.fc(s.ln2(x))))


class GPT(nn.Module):
    def __init__(s):
        super().__init__(); s.tok = nn.Embedding(V, D); s.pos = nn.Embedding(CTX, D)
        s.blocks = nn.ModuleList([Block() for _ in range(L)]); s.lnf = nn.LayerNorm(D); s.head = nn.Linear(D, V, bias=False)

    def forward(s, idx):
        x = s.tok(idx) + s.pos(torch.arange(idx.shape[1]))
        for b in s.blocks: x = b(x)
        return s.head(s.lnf(x))


m = GPT()
trn = cfg['training']
opt = (torch.optim.RMSprop if trn.get('optimizer') == 'rmsprop' else torch.optim.Adam)(m.parameters(), lr=1e-4)
TB, TT = trn['batch'], trn['sequence_tokens']
x = torch.randint(0, V, (TB, TT + 1))


def step():
    loss = F.cross_entropy(m(x[:, :-1]).reshape(-1, V), x[:, 1:].reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()


step()  # warm-up
wall, cpu = [], []
for _ in range(REPS):
    t, c = time.perf_counter(), time.process_time()
    step()
    wall.append((time.perf_counter() - t) * 1000); cpu.append((time.process_time() - c) * 1000)
med = lambda xs: sorted(xs)[len(xs) // 2]
print(json.dumps({"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "batch": TB, "sequence_tokens": TT,
                  "step_ms": [round(v, 1) for v in wall], "cpu_ms": [round(v, 1) for v in cpu],
                  "train_tokens_per_s": round(TB * TT / med(wall) * 1000, 1), "train_tokens_per_cpu_s": round(TB * TT / med(cpu) * 1000, 1)}))
