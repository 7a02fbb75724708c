#!/usr/bin/env python3
"""PyTorch yardstick for `vavae bench dit-step`: LightningDiT (hustvl/LightningDiT
models/lightningdit.py, the released flags: SwiGLU, 2-D RoPE, RMSNorm, adaLN; plain softmax
attention as upstream's non-fused path) and train.py's step (label dropout, logit-normal t,
velocity MSE + cosine loss, backward, Adam, EMA) in eager PyTorch with Debian's python3-torch.

  dit_ref.py check FIXTURE_VARIANT_DIR   the forward pass against a fixture variant (weights, inputs, outputs)
  dit_ref.py step --depth D --width W --heads H --channels C --res S --batch B [--steps N --warmup K --threads T]
                                         one JSON line like `vavae bench dit-step`

A measuring tool, not part of the product: bench/dit.sh runs both side by side."""
import argparse
import json
import math
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def token_norm(dim, rms):
    return RMSNorm(dim) if rms else nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)


def rotate_half(x):
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)


class Rope(nn.Module):
    def __init__(self, head_dim, grid):
        super().__init__()
        dim = head_dim // 2
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        angles = (torch.arange(grid).float()[:, None] * freqs[None]).repeat_interleave(2, 1)
        table = torch.cat([angles[:, None].expand(grid, grid, dim), angles[None].expand(grid, grid, dim)], -1).reshape(grid * grid, head_dim)
        self.register_buffer("freqs_cos", table.cos())
        self.register_buffer("freqs_sin", table.sin())

    def forward(self, x):
        return x * self.freqs_cos + rotate_half(x) * self.freqs_sin


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = rope(q), rope(k)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        h = int(2 / 3 * hidden)
        self.w12 = nn.Linear(dim, 2 * h)
        self.w3 = nn.Linear(h, dim)

    def forward(self, x):
        a, b = self.w12(x).chunk(2, -1)
        return self.w3(F.silu(a) * b)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, dim, heads, rms):
        super().__init__()
        self.norm1, self.norm2 = token_norm(dim, rms), token_norm(dim, rms)
        self.attn = Attention(dim, heads)
        self.mlp = SwiGLU(dim, 4 * dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, rope):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, 1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1), rope)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, sc2))


def sincos_2d(dim, grid):
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)
    idx = np.arange(grid, dtype=np.float64)
    col, row = np.tile(idx, grid), np.repeat(idx, grid)
    axis = lambda p: np.concatenate([np.sin(p[:, None] * omega), np.cos(p[:, None] * omega)], 1)
    return torch.from_numpy(np.concatenate([axis(col), axis(row)], 1)).float()[None]


def timestep_features(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class LightningDiT(nn.Module):
    def __init__(self, size, channels, depth, width, heads, classes=10, rope=True, rms=True):
        super().__init__()
        self.size, self.channels = size, channels
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(channels, width, 1)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.y_embedder = nn.Module()
        self.y_embedder.embedding_table = nn.Embedding(classes + 1, width)
        self.register_buffer("pos_embed", sincos_2d(width, size))
        self.feat_rope = Rope(width // heads, size) if rope else None
        self.blocks = nn.ModuleList(Block(width, heads, rms) for _ in range(depth))
        self.final_layer = nn.Module()
        self.final_layer.norm_final = token_norm(width, rms)
        self.final_layer.linear = nn.Linear(width, channels)
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.null_label = classes

    def forward(self, x, t, y):
        b = x.shape[0]
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder.mlp(timestep_features(t)) + self.y_embedder.embedding_table(y)
        for block in self.blocks:
            tokens = block(tokens, c, self.feat_rope)
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, 1)
        out = self.final_layer.linear(modulate(self.final_layer.norm_final(tokens), shift, scale))
        return out.reshape(b, self.size, self.size, self.channels).permute(0, 3, 1, 2)


def read_safetensors(path):
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=dtypes[e["dtype"]]).reshape(e["shape"]).copy())
    return out


def check(folder):
    ctor = json.load(open(f"{folder}/config.json"))["constructor"]
    if not (ctor["use_swiglu"] and ctor["patch_size"] == 1 and not ctor["use_qknorm"] and not ctor["learn_sigma"] and not ctor["wo_shift"]):
        sys.exit(f"{folder}: the reference builds patch 1, SwiGLU, no QK-norm, with shift (the released flags)")
    model = LightningDiT(ctor["input_size"], ctor["in_channels"], ctor["depth"], ctor["hidden_size"], ctor["num_heads"],
                         ctor["num_classes"], ctor["use_rope"], ctor["use_rmsnorm"])
    weights = read_safetensors(f"{folder}/weights.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or [k for k in unexpected if "rope" not in k]:
        sys.exit(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    inputs, outputs = read_safetensors(f"{folder}/inputs.safetensors"), read_safetensors(f"{folder}/outputs.safetensors")
    with torch.no_grad():
        out = model(inputs["x"], inputs["t"], inputs["y"])
    diff = (out - outputs["out"]).abs().max().item()
    print(json.dumps({"check": folder, "max_abs_diff": diff}))
    if diff > 1e-4:
        sys.exit("the reference's forward pass differs from the fixture")


def step(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = LightningDiT(a.res, a.channels, a.depth, a.width, a.heads)
    ema = LightningDiT(a.res, a.channels, a.depth, a.width, a.heads).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, a.beta2), eps=1e-8)
    x1 = torch.randn(a.batch, a.channels, a.res, a.res)
    labels = torch.arange(a.batch) % 10

    def one(i):
        g = torch.Generator().manual_seed(i)
        y = torch.where(torch.rand(a.batch, generator=g) < 0.1, torch.full_like(labels, model.null_label), labels)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.sigmoid(torch.randn(a.batch, generator=g, dtype=torch.float64)).float()
        tt = t.view(-1, 1, 1, 1)
        xt, ut = tt * x1 + (1 - tt) * x0, x1 - x0
        pred = model(xt, t, y)
        mse = (pred - ut).pow(2).mean((1, 2, 3))
        cos = 1 - F.cosine_similarity(pred, ut, dim=1)
        loss = cos.mean((1, 2)).mean() + mse.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(a.ema).add_(p, alpha=1 - a.ema)
        return loss.item()

    for i in range(a.warmup):
        one(i)
    seconds = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        last = one(a.warmup + i)
        seconds.append(time.perf_counter() - t0)
    median = sorted(seconds)[len(seconds) // 2]
    print(json.dumps({"impl": "torch", "bench": "dit-step", "batch": a.batch, "res": a.res, "threads": torch.get_num_threads(),
                      "s_per_step": median, "images_per_s": a.batch / median, "last_loss": last,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("folder")
    s = sub.add_parser("step")
    for name, default in [("depth", 4), ("width", 128), ("heads", 4), ("channels", 16), ("res", 4), ("batch", 64), ("steps", 20),
                          ("warmup", 3), ("threads", 2)]:
        s.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("lr", 5e-4), ("beta2", 0.95), ("ema", 0.999)]:
        s.add_argument(f"--{name}", type=float, default=default)
    a = p.parse_args()
    check(a.folder) if a.mode == "check" else step(a)


if __name__ == "__main__":
    main()
