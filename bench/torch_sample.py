#!/usr/bin/env python3
"""PyTorch peer of `npm run bench:sample`'s paged case: K samples per prompt from a plain Llama of
an HF config.json (bench/torch_llama.py's model, random init), done the best plain-PyTorch way —
each prompt prefilled once (batch 1), its KV cache repeated K times, the K samples decoded as one
batch with a growing KV cache; temperature 1, no stop tokens (every sample runs to max new tokens,
as in the tfalign bench). Prompts run one after another. Prints one JSON line.

    /usr/bin/python3 bench/torch_sample.py --config configs/models/small.json \
        --prompts 8 --prompt-tokens 256 --k 16 --new-tokens 64 --threads 1
"""
import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from torch_llama import Llama, cpu_seconds, rotate_half


def forward_cached(model, ids, past, start):
    """Logits of the last position and the extended cache; ids (B, T) at positions start … start+T−1."""
    B, T = ids.shape
    head_dim = model.layers[0].head_dim
    inv_freq = 1.0 / (model.c.get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(start, start + T).float(), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    cos, sin = emb.cos(), emb.sin()
    # New token i (absolute start + i) sees cached positions and new ones up to itself.
    mask = torch.full((T, start + T), float("-inf")).triu(start + 1)  # (T, S+T)
    x = model.embed_tokens(ids)  # (B, T, hidden)
    new_past = []
    for layer, cache in zip(model.layers, past):
        h = layer.input_layernorm(x)
        q = layer.q_proj(h).view(B, T, layer.num_heads, head_dim).transpose(1, 2)  # (B, H, T, D)
        k = layer.k_proj(h).view(B, T, layer.num_kv_heads, head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = layer.v_proj(h).view(B, T, layer.num_kv_heads, head_dim).transpose(1, 2)  # (B, KV, T, D)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k = torch.cat((cache[0], k), dim=2)  # (B, KV, S+T, D)
            v = torch.cat((cache[1], v), dim=2)
        new_past.append((k, v))
        group = layer.num_heads // layer.num_kv_heads
        kk = k.repeat_interleave(group, dim=1)  # (B, H, S+T, D)
        vv = v.repeat_interleave(group, dim=1)
        scores = q @ kk.transpose(-1, -2) / math.sqrt(head_dim) + mask  # (B, H, T, S+T)
        attn = torch.softmax(scores, dim=-1) @ vv  # (B, H, T, D)
        x = x + layer.o_proj(attn.transpose(1, 2).reshape(B, T, -1))
        h = layer.post_attention_layernorm(x)
        x = x + layer.down_proj(F.silu(layer.gate_proj(h)) * layer.up_proj(h))
    return model.lm_head(model.norm(x[:, -1])), new_past  # (B, V)


def sample_prompt(model, prompt, k, new_tokens, generator):
    logits, past = forward_cached(model, prompt[None, :], [None] * len(model.layers), 0)  # prefill once
    past = [(pk.repeat(k, 1, 1, 1), pv.repeat(k, 1, 1, 1)) for pk, pv in past]  # K copies of the prompt's cache
    logits = logits.repeat(k, 1)  # (K, V)
    position = prompt.shape[0]
    out = []
    for _ in range(new_tokens):
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)  # (K, 1), temperature 1
        out.append(token)
        if len(out) == new_tokens:
            break
        logits, past = forward_cached(model, token, past, position)
        position += 1
    return torch.cat(out, dim=1)  # (K, new_tokens)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.config) as f:
        c = json.load(f)
    model = Llama(c).eval()
    generator = torch.Generator().manual_seed(7)
    prompts = torch.randint(0, c["vocab_size"], (a.prompts, a.prompt_tokens), generator=generator)
    with torch.no_grad():
        sample_prompt(model, prompts[0, :16], 2, 2, generator)  # warm-up
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        generated = sum(sample_prompt(model, p, a.k, a.new_tokens, generator).numel() for p in prompts)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    print(json.dumps({
        "bench": "sample-vs-torch", "framework": "pytorch", "mode": "prefill once, K decoded as one batch", "torch": torch.__version__,
        "threads": a.threads, "config": a.config, "prompts": a.prompts, "prompt_tokens": a.prompt_tokens, "k": a.k,
        "generated_tokens": generated, "wall_s": seconds, "tokens_per_s": generated / seconds, "cpu_seconds": cpu,
        "tokens_per_cpu_s": generated / cpu, "load_avg_1m": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
