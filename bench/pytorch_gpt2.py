#!/usr/bin/env python3
"""The PyTorch reference for bench_train_step: the same GPT-2 model and batch
(learned positions, LayerNorm, tanh GELU, biases, tied output layer, vocab
padded to a multiple of 128, no dropout), one micro-batch of random tokens per
step, forward + backward + AdamW with clipping at 1.0, bf16 autocast over fp32
parameters, attention through scaled_dot_product_attention (PyTorch's flash
kernel on a GPU). Runs eager, then torch.compile, in one process.

Model TFLOP/s uses gpt3d's formula (gpt_flops_per_token in model/gpt_stage.c),
so the numbers line up with bench_train_step's. The last line of each mode is
"result: {...}", one JSON object, for scripts/run_gpu_checks.sh.

Usage: pytorch_gpt2.py [--num-layers 12] [--hidden-size 768]
       [--num-attention-heads 12] [--seq-length 1024] [--micro-batch-size 8]
       [--vocab-size 50257] [--iters 10] [--warmup 3] [--modes eager,compile]
       [--peak-tflops 989]
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_attention(q, k, v):
    """PyTorch's fused attention where it has one (2.0 and later), else the
    plain causal softmax (the same numbers up to rounding)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(dim=-1) @ v


class Block(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden, eps=1e-5)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-5)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (y.view(shape).transpose(1, 2) for y in (q, k, v))
        y = causal_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, layers, hidden, heads, seq, padded_vocab):
        super().__init__()
        self.wte = nn.Embedding(padded_vocab, hidden)
        self.wpe = nn.Embedding(seq, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def flops_per_token(layers, hidden, seq, padded_vocab):
    """gpt_flops_per_token for the GPT-2 variant: forward matmuls at 2 flops a
    multiply-add, causal attention halved, backward twice the forward."""
    c = float(hidden)
    attention = 2.0 * (4.0 * c * c) + 2.0 * seq * c
    mlp = 2.0 * (c * 4 * c + 4 * c * c)
    return 3.0 * (layers * (attention + mlp) + 2.0 * c * padded_vocab)


def run(mode, a, device):
    torch.manual_seed(1234)
    padded = (a.vocab_size + 127) // 128 * 128
    model = GPT2(a.num_layers, a.hidden_size, a.num_attention_heads, a.seq_length, padded).to(device)
    # The fused kernel on a GPU (PyTorch 2); older CPU builds lack the argument.
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, **fused)
    step_model = torch.compile(model) if mode == "compile" else model
    gen = torch.Generator(device="cpu").manual_seed(1)
    shape = (a.micro_batch_size, a.seq_length)
    tokens = torch.randint(0, a.vocab_size, shape, generator=gen).to(device)
    targets = torch.randint(0, a.vocab_size, shape, generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = step_model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    t_first = time.perf_counter()
    for _ in range(a.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - t_first
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        loss = step()
    sync(device)
    total = time.perf_counter() - t0
    tokens_per_s = a.micro_batch_size * a.seq_length * a.iters / total
    tflops = flops_per_token(a.num_layers, a.hidden_size, a.seq_length, padded) * tokens_per_s / 1e12
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    params = sum(p.numel() for p in model.parameters())
    print(f"pytorch {mode}: step {1000 * total / a.iters:.1f} ms, {tokens_per_s:.0f} tokens/s, "
          f"model {tflops:.2f} TFLOP/s, MFU {100 * tflops / a.peak_tflops:.1f}% of "
          f"{a.peak_tflops:.0f}; peak memory {peak_mib:.1f} MiB; warm-up {warmup_s:.1f} s; "
          f"loss {loss.item():.4f}")
    result = {"framework": "pytorch", "mode": mode, "torch": torch.__version__,
              "parameters": params, "step_ms": 1000 * total / a.iters,
              "tokens_per_s": tokens_per_s, "model_tflops": tflops,
              "mfu": tflops / a.peak_tflops, "peak_mib": peak_mib, "warmup_s": warmup_s}
    print("result: " + json.dumps(result), flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-layers", type=int, default=12)
    p.add_argument("--hidden-size", type=int, default=768)
    p.add_argument("--num-attention-heads", type=int, default=12)
    p.add_argument("--seq-length", type=int, default=1024)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    if a.hidden_size % a.num_attention_heads:
        sys.exit("error: --hidden-size must be a multiple of --num-attention-heads")
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"config: {a.num_layers} layers, hidden {a.hidden_size}, {a.num_attention_heads} heads, "
          f"seq {a.seq_length}, micro-batch {a.micro_batch_size}, vocab {a.vocab_size}; "
          f"torch {torch.__version__} on {name}", flush=True)
    for mode in a.modes.split(","):
        if mode not in ("eager", "compile"):
            sys.exit(f"error: --modes takes eager and compile, not {mode!r}")
        run(mode, a, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
