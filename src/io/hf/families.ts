// Hugging Face families: for each `model_type`, a function config.json → ModelSpec and a weight-name
// map (canonical name → HF tensor name plus an optional fix-up applied once at load). No compute here.

import type { Activation, LayerSpec, ModelSpec, RopeSpec, SublayerSpec } from '../../model/spec.ts';
import { SPEC_FORMAT, SPEC_VERSION } from '../../model/spec.ts';
import type { HfConfig } from './config.ts';

/** How a canonical weight is read from the HF tensors. */
export interface WeightSource {
  hf: string;
  /** GPT-2 Conv1D stores (in, out): transpose to (out, in). */
  transpose?: boolean;
  /** Take part `index` of `parts` equal parts along the first dim (after any transpose): fused qkv. */
  split?: { index: number; parts: number };
  /** The HF tensor stacks every expert along a leading dim (E, ·, ·): take this expert's matrix first. */
  expert?: number;
  /** Where to read instead when the checkpoint lacks `hf` (another layout of the same weight). */
  fallback?: WeightSource;
}

export interface HfFamily {
  /** config.json → spec. Throws CheckpointError/UnsupportedModelError naming the field. */
  toSpec(cfg: HfConfig): ModelSpec;
  /** Where a canonical weight comes from. */
  source(name: string): WeightSource;
  /** HF tensors that are buffers, not weights, and may be ignored. */
  ignore?: RegExp;
}

const ACTS: Record<string, Activation> = {
  silu: 'silu', swish: 'silu', gelu: 'gelu', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh', gelu_fast: 'gelu_tanh', relu: 'relu',
};

function activation(cfg: HfConfig, key: string): Activation {
  const a = cfg.str(key);
  const act = ACTS[a];
  if (!act) cfg.unsupported(`field '${key}': activation '${a}' is not supported`, `supported: ${Object.keys(ACTS).join(', ')}`);
  return act;
}

/** rope_theta (transformers < 5) or rope_parameters.rope_theta (transformers 5), and scaling. */
function ropeOf(cfg: HfConfig, headDim: number): RopeSpec {
  const params = (cfg.raw.rope_parameters ?? cfg.raw.rope_scaling) as Record<string, unknown> | undefined | null;
  const theta = typeof params?.rope_theta === 'number' ? params.rope_theta : cfg.num('rope_theta', 10000);
  const rope: RopeSpec = { theta };
  const partial = cfg.num('partial_rotary_factor', 1);
  if (partial !== 1) rope.dim = Math.round(headDim * partial);
  const type = (params?.rope_type ?? params?.type ?? 'default') as string;
  const num = (k: string) => {
    const v = params?.[k];
    if (typeof v !== 'number') cfg.unsupported(`rope scaling '${type}' needs a numeric '${k}', found ${JSON.stringify(v)}`);
    return v;
  };
  if (type === 'default') return rope;
  if (type === 'linear') rope.scaling = { type: 'linear', factor: num('factor') };
  else if (type === 'llama3') rope.scaling = {
    type: 'llama3', factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
    originalMaxPositions: num('original_max_position_embeddings'),
  };
  else cfg.unsupported(`rope type '${type}' is not supported`, "supported rope types: default, linear, llama3");
  return rope;
}

/** Llama-like decoders: llama, mistral, qwen2, mixtral. */
function llamaLike(kind: 'llama' | 'mistral' | 'qwen2' | 'mixtral'): HfFamily {
  return {
    toSpec(cfg) {
      const C = cfg.int('hidden_size');
      const H = cfg.int('num_attention_heads');
      const K = cfg.int('num_key_value_heads', H);
      const D = cfg.int('head_dim', Math.floor(C / H));
      const L = cfg.int('num_hidden_layers');
      let maxContext = cfg.int('max_position_embeddings');
      const sliding = cfg.has('sliding_window') && (kind !== 'qwen2' || cfg.bool('use_sliding_window', false)) ? cfg.int('sliding_window') : undefined;
      // NOTE: sliding-window attention equals full attention for sequences within the window,
      // so the context is capped to the window rather than computing something different.
      if (sliding !== undefined && sliding < maxContext) maxContext = sliding;
      const attn: SublayerSpec = {
        kind: 'attn', heads: H, kvHeads: K, headDim: D, rope: true,
        qkvBias: kind === 'qwen2' ? true : cfg.bool('attention_bias', false),
        outBias: kind === 'qwen2' ? false : cfg.bool('attention_bias', false),
      };
      const act = activation(cfg, 'hidden_act');
      const ffn: SublayerSpec = kind === 'mixtral'
        ? { kind: 'moe', experts: cfg.int('num_local_experts'), topK: cfg.int('num_experts_per_tok'), hidden: cfg.int('intermediate_size'), gated: true, activation: act, bias: false, renormalize: true }
        : { kind: 'ffn', hidden: cfg.int('intermediate_size'), gated: true, activation: act, bias: cfg.bool('mlp_bias', false) };
      const layers: LayerSpec[] = Array.from({ length: L }, () => ({ sublayers: [{ ...attn }, { ...ffn }], wiring: 'serial', norm: 'pre' }));
      return {
        format: SPEC_FORMAT, version: SPEC_VERSION, family: kind,
        vocabSize: cfg.int('vocab_size'), dModel: C, maxContext,
        norm: { kind: 'rmsnorm', eps: cfg.num('rms_norm_eps', 1e-6), bias: false },
        learnedPositions: false, rope: ropeOf(cfg, D),
        tiedEmbeddings: cfg.bool('tie_word_embeddings', false), finalNorm: true, layers,
        eosTokenIds: cfg.ids('eos_token_id'), bosTokenId: cfg.ids('bos_token_id')?.[0],
      };
    },
    source(name) {
      const fixed: Record<string, string> = { 'embed.weight': 'model.embed_tokens.weight', 'final_norm.weight': 'model.norm.weight', 'lm_head.weight': 'lm_head.weight' };
      if (fixed[name]) return { hf: fixed[name] };
      const m = /^layers\.(\d+)\.(attn|ffn|moe)\.(.+)$/.exec(name);
      if (!m) return { hf: name };
      const [, i, sub, rest] = m;
      const p = `model.layers.${i}`;
      if (rest.startsWith('norm.')) return { hf: `${p}.${sub === 'attn' ? 'input_layernorm' : 'post_attention_layernorm'}.${rest.slice(5)}` };
      if (sub === 'attn') return { hf: `${p}.self_attn.${rest.replace(/^([qkvo])\./, '$1_proj.')}` };
      if (sub === 'ffn') return { hf: `${p}.mlp.${rest.replace(/^(gate|up|down)\./, '$1_proj.')}` };
      // NOTE: transformers 5 holds Mixtral experts fused, mlp.experts.gate_up_proj (E, 2F, C) with gate
      // rows first and mlp.experts.down_proj (E, C, F); saved checkpoints use the per-expert names.
      if (rest.startsWith('router.')) return { hf: `${p}.block_sparse_moe.gate.${rest.slice(7)}`, fallback: { hf: `${p}.mlp.gate.${rest.slice(7)}` } };
      const e = /^experts\.(\d+)\.(gate|up|down)\.(.+)$/.exec(rest);
      if (e) {
        const expert = Number(e[1]);
        const fused: WeightSource | undefined = e[3] !== 'weight' ? undefined : e[2] === 'down'
          ? { hf: `${p}.mlp.experts.down_proj`, expert }
          : { hf: `${p}.mlp.experts.gate_up_proj`, expert, split: { index: e[2] === 'gate' ? 0 : 1, parts: 2 } };
        return { hf: `${p}.block_sparse_moe.experts.${e[1]}.${{ gate: 'w1', up: 'w3', down: 'w2' }[e[2]]}.${e[3]}`, fallback: fused };
      }
      return { hf: name };
    },
    ignore: /rotary_emb\.inv_freq$/,
  };
}

const GPT2: HfFamily = {
  toSpec(cfg) {
    const C = cfg.int('n_embd');
    const H = cfg.int('n_head');
    if (cfg.bool('scale_attn_by_inverse_layer_idx', false)) cfg.unsupported("field 'scale_attn_by_inverse_layer_idx': true is not supported");
    if (!cfg.bool('scale_attn_weights', true)) cfg.unsupported("field 'scale_attn_weights': false is not supported");
    const attn: SublayerSpec = { kind: 'attn', heads: H, kvHeads: H, headDim: C / H, rope: false, qkvBias: true, outBias: true };
    const ffn: SublayerSpec = { kind: 'ffn', hidden: cfg.int('n_inner', 4 * C), gated: false, activation: activation(cfg, 'activation_function'), bias: true };
    if (C % H !== 0) cfg.unsupported(`n_embd ${C} is not a multiple of n_head ${H}`);
    return {
      format: SPEC_FORMAT, version: SPEC_VERSION, family: 'gpt2',
      vocabSize: cfg.int('vocab_size'), dModel: C, maxContext: cfg.int('n_positions'),
      norm: { kind: 'layernorm', eps: cfg.num('layer_norm_epsilon', 1e-5), bias: true },
      learnedPositions: true, tiedEmbeddings: cfg.bool('tie_word_embeddings', true), finalNorm: true,
      layers: Array.from({ length: cfg.int('n_layer') }, () => ({ sublayers: [{ ...attn }, { ...ffn }], wiring: 'serial' as const, norm: 'pre' as const })),
      eosTokenIds: cfg.ids('eos_token_id'), bosTokenId: cfg.ids('bos_token_id')?.[0],
    };
  },
  source(name) {
    const fixed: Record<string, string> = {
      'embed.weight': 'transformer.wte.weight', 'pos_embed.weight': 'transformer.wpe.weight',
      'final_norm.weight': 'transformer.ln_f.weight', 'final_norm.bias': 'transformer.ln_f.bias', 'lm_head.weight': 'lm_head.weight',
    };
    if (fixed[name]) return { hf: fixed[name] };
    const m = /^layers\.(\d+)\.(attn|ffn)\.(\w+)\.(weight|bias)$/.exec(name);
    if (!m) return { hf: name };
    const [, i, sub, part, kind] = m;
    const p = `transformer.h.${i}`;
    const transpose = kind === 'weight';
    if (part === 'norm') return { hf: `${p}.${sub === 'attn' ? 'ln_1' : 'ln_2'}.${kind}` };
    if (sub === 'attn' && 'qkv'.includes(part)) return { hf: `${p}.attn.c_attn.${kind}`, transpose, split: { index: 'qkv'.indexOf(part), parts: 3 } };
    if (sub === 'attn' && part === 'o') return { hf: `${p}.attn.c_proj.${kind}`, transpose };
    if (part === 'up') return { hf: `${p}.mlp.c_fc.${kind}`, transpose };
    if (part === 'down') return { hf: `${p}.mlp.c_proj.${kind}`, transpose };
    return { hf: name };
  },
  ignore: /\.attn\.(masked_)?bias$/,
};

/** Every supported `model_type`. */
export const HF_FAMILIES: Record<string, HfFamily> = {
  llama: llamaLike('llama'),
  mistral: llamaLike('mistral'),
  qwen2: llamaLike('qwen2'),
  mixtral: llamaLike('mixtral'),
  gpt2: GPT2,
};
