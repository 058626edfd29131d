/**
 * A deliberately naive float64 Llama forward written line by line from transformers'
 * `modeling_llama.py` (repeat_kv, rotate_half, eager attention), over HF-layout tensors
 * ([out, in] linear weights). It shares no code with src/model, so agreement is evidence.
 */
import type { NamedTensor } from '../../src/model/safetensors.js';

export interface RefConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  rope_scaling?: { rope_type: string; factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number } | null;
}

type Mat = Float64Array;

function linear(x: Mat[], w: NamedTensor): Mat[] {
  // y = x W^T with W [out, in]
  const [out, inDim] = w.shape;
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inDim; i++) s += row[i] * w.data[o * inDim + i];
      y[o] = s;
    }
    return y;
  });
}

function rmsnorm(x: Mat[], w: NamedTensor, eps: number): Mat[] {
  return x.map((row) => {
    let ms = 0;
    for (const v of row) ms += v * v;
    ms /= row.length;
    const inv = 1 / Math.sqrt(ms + eps);
    return row.map((v, i) => v * inv * w.data[i]);
  });
}

function invFreqs(c: RefConfig, d: number): number[] {
  const inv = Array.from({ length: d / 2 }, (_, i) => 1 / Math.pow(c.rope_theta, (2 * i) / d));
  const s = c.rope_scaling;
  if (!s || s.rope_type !== 'llama3') return inv;
  const lowW = s.original_max_position_embeddings / s.low_freq_factor;
  const highW = s.original_max_position_embeddings / s.high_freq_factor;
  return inv.map((f) => {
    const wl = (2 * Math.PI) / f;
    const scaled = wl > lowW ? f / s.factor : f;
    const smooth = (s.original_max_position_embeddings / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const isMedium = !(wl < highW) && !(wl > lowW);
    return isMedium ? (1 - smooth) * (scaled / s.factor) + smooth * scaled : scaled;
  });
}

/** Logits [T][V] for one sequence of token ids with positions 0..T-1 (or given). */
export function referenceLogits(c: RefConfig, w: Map<string, NamedTensor>, ids: number[], positions?: number[]): Float64Array[] {
  const t = ids.length;
  const h = c.num_attention_heads;
  const hkv = c.num_key_value_heads ?? h;
  const d = c.head_dim ?? c.hidden_size / h;
  const emb = w.get('model.embed_tokens.weight')!;
  let x: Mat[] = ids.map((id) => Float64Array.from(emb.data.subarray(id * c.hidden_size, (id + 1) * c.hidden_size)));
  const inv = invFreqs(c, d);
  const pos = positions ?? ids.map((_, i) => i);
  const rope = (vec: Float64Array, p: number) => {
    const out = new Float64Array(d);
    for (let i = 0; i < d; i++) {
      const f = inv[i % (d / 2)];
      const cos = Math.cos(p * f);
      const sin = Math.sin(p * f);
      const rot = i < d / 2 ? -vec[i + d / 2] : vec[i - d / 2];
      out[i] = vec[i] * cos + rot * sin;
    }
    return out;
  };
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const xn = rmsnorm(x, w.get(`${p}.input_layernorm.weight`)!, c.rms_norm_eps);
    const q = linear(xn, w.get(`${p}.self_attn.q_proj.weight`)!);
    const k = linear(xn, w.get(`${p}.self_attn.k_proj.weight`)!);
    const v = linear(xn, w.get(`${p}.self_attn.v_proj.weight`)!);
    const attnOut: Mat[] = Array.from({ length: t }, () => new Float64Array(h * d));
    for (let head = 0; head < h; head++) {
      const kvHead = Math.floor(head / (h / hkv)); // repeat_kv
      const qs = q.map((row, i) => rope(row.subarray(head * d, (head + 1) * d), pos[i]));
      const ks = k.map((row, i) => rope(row.subarray(kvHead * d, (kvHead + 1) * d), pos[i]));
      for (let i = 0; i < t; i++) {
        const scores = new Float64Array(i + 1);
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          let s = 0;
          for (let e = 0; e < d; e++) s += qs[i][e] * ks[j][e];
          scores[j] = s / Math.sqrt(d);
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j <= i; j++) sum += (scores[j] = Math.exp(scores[j] - max));
        for (let j = 0; j <= i; j++) {
          const pj = scores[j] / sum;
          for (let e = 0; e < d; e++) attnOut[i][head * d + e] += pj * v[j][kvHead * d + e];
        }
      }
    }
    const o = linear(attnOut, w.get(`${p}.self_attn.o_proj.weight`)!);
    x = x.map((row, i) => row.map((val, j) => val + o[i][j]));
    const xn2 = rmsnorm(x, w.get(`${p}.post_attention_layernorm.weight`)!, c.rms_norm_eps);
    const gate = linear(xn2, w.get(`${p}.mlp.gate_proj.weight`)!);
    const up = linear(xn2, w.get(`${p}.mlp.up_proj.weight`)!);
    const act = gate.map((row, i) => row.map((g, j) => (g / (1 + Math.exp(-g))) * up[i][j]));
    const down = linear(act, w.get(`${p}.mlp.down_proj.weight`)!);
    x = x.map((row, i) => row.map((val, j) => val + down[i][j]));
  }
  const final = rmsnorm(x, w.get('model.norm.weight')!, c.rms_norm_eps);
  const head = c.tie_word_embeddings ? emb : w.get('lm_head.weight')!;
  return linear(final, head);
}

/** log p(ids[i+1] | ids[..i]) for i in [from-1, T-2]: the log-probs of tokens ids[from..]. */
export function referenceTokenLogprobs(c: RefConfig, w: Map<string, NamedTensor>, ids: number[], from: number): number[] {
  const logits = referenceLogits(c, w, ids);
  const out: number[] = [];
  for (let i = from; i < ids.length; i++) {
    const row = logits[i - 1];
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    out.push(row[ids[i]] - max - Math.log(sum));
  }
  return out;
}
