"""An independent reader of Hugging Face safetensors checkpoints, written against the format's specification
(https://github.com/huggingface/safetensors#format) and transformers' sharding convention, with nothing from sppo:
it checks that a model directory written by sppo loads where `transformers.from_pretrained` would load it.

  /usr/bin/python3 scripts/torch/read_checkpoint.py MODEL_DIR [MODEL_DIR ...]

Reads model.safetensors, or model.safetensors.index.json and the shards it names, the way transformers does
(index's weight_map -> shard file; every shard's header: 8-byte little-endian length, JSON, raw little-endian data);
checks what transformers relies on (metadata format "pt", data_offsets contiguous from 0 and matching dtype x shape,
shard names model-0000i-of-0000N.safetensors, index total_size = bytes of tensor data, every weight_map entry in its
shard and every shard tensor in the weight_map) and prints one JSON line per directory:
  {"files": [...], "total_size": N, "tensors": {name: {"dtype": "F32", "shape": [...], "sum": s, "first": [...]}}}
with sums and first values computed in float64 by torch. Needs Debian's python3-torch only.
"""
import json, os, re, struct, sys
import torch

DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "F64": (torch.float64, 8),
          "I32": (torch.int32, 4), "I64": (torch.int64, 8)}


def fail(msg):
    raise SystemExit(f"read_checkpoint: {msg}")


def read_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf8"))
    meta = header.pop("__metadata__", {})
    if meta.get("format") != "pt":
        fail(f"{path}: __metadata__.format is {meta.get('format')!r}; transformers wants 'pt'")
    data = raw[8 + n:]
    spans = sorted((e["data_offsets"][0], e["data_offsets"][1], k) for k, e in header.items())
    at = 0
    for begin, end, k in spans:
        if begin != at:
            fail(f"{path}: tensor {k} starts at {begin}, expected {at} (data must be contiguous)")
        at = end
    if at != len(data):
        fail(f"{path}: data section is {len(data)} bytes, tensors cover {at}")
    out = {}
    for k, e in header.items():
        dtype, size = DTYPES[e["dtype"]]
        count = 1
        for d in e["shape"]:
            count *= d
        begin, end = e["data_offsets"]
        if end - begin != count * size:
            fail(f"{path}: tensor {k} has {end - begin} bytes for {e['shape']} of {e['dtype']}")
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(e["shape"]) if count else torch.zeros(e["shape"], dtype=dtype)
        out[k] = (e["dtype"], t, end - begin)
    return out


def main(d):
    single = os.path.join(d, "model.safetensors")
    index_path = os.path.join(d, "model.safetensors.index.json")
    tensors, files, total = {}, [], 0
    if os.path.exists(single):
        files = ["model.safetensors"]
        for k, (dt, t, nbytes) in read_file(single).items():
            tensors[k] = (dt, t)
            total += nbytes
    elif os.path.exists(index_path):
        index = json.load(open(index_path))
        weight_map = index["weight_map"]
        files = sorted(set(weight_map.values()))
        n = len(files)
        for i, name in enumerate(files):
            if name != f"model-{i + 1:05d}-of-{n:05d}.safetensors":
                fail(f"shard {name} is not named model-{i + 1:05d}-of-{n:05d}.safetensors")
            for k, (dt, t, nbytes) in read_file(os.path.join(d, name)).items():
                if weight_map.get(k) != name:
                    fail(f"{name} holds {k}, which weight_map puts in {weight_map.get(k)}")
                tensors[k] = (dt, t)
                total += nbytes
        missing = set(weight_map) - set(tensors)
        if missing:
            fail(f"weight_map lists tensors no shard holds: {sorted(missing)[:5]}")
        if index["metadata"]["total_size"] != total:
            fail(f"metadata.total_size is {index['metadata']['total_size']}, the shards hold {total} bytes of tensors")
    else:
        fail(f"{d} has neither model.safetensors nor model.safetensors.index.json")
    summary = {k: {"dtype": dt, "shape": list(t.shape), "sum": float(t.double().sum()), "first": [float(v) for v in t.double().flatten()[:4]]}
               for k, (dt, t) in sorted(tensors.items())}
    print(json.dumps({"files": files, "total_size": total, "tensors": summary}))


if __name__ == "__main__":
    for d in sys.argv[1:]:
        main(d)
