// Training throughput, with its peer measured in the same run: tokens/s of full training steps
// (forward, backward, AdamW) for a GPT-2-small-shaped model (124M parameters, T 1024, fp32) on a
// backend, against PyTorch + HF GPT2LMHeadModel on the same machine (fp32, TF32 off, dropout off; its
// default sdpa attention, and eager) via bench/peer_train.py. Prints the rates and the ratios.
//   node --import ./scripts/ts.mjs bench/train.ts [--device webgpu|cpu] [--batch B] [--seq T] [--steps N] [--small] [--peer]
// --small runs a 4-layer, C 256 model (T 256) for smoke tests on machines without a GPU.
// On WebGPU the steps are also timed with the 128-wide matmul tile, with one and with two shared-memory
// buffers (WebGpuBackend.matmulTile, matmulStages), beside the default 64-wide tile (not with --small,
// unless --tiles is given: on an emulated GPU each variant takes minutes).

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { AdamW, getBackend, gradients, randomModel, WebGpuBackend, type ModelSpec } from '../src/index.ts';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const small = process.argv.includes('--small');
const device = arg('--device', 'webgpu') as 'webgpu' | 'cpu';
const T = Number(arg('--seq', small ? '256' : '1024'));
const B = Number(arg('--batch', small ? '2' : '4'));
const steps = Number(arg('--steps', small ? '3' : '10'));
const shape = small ? { C: 256, L: 4, H: 4, V: 50257 } : { C: 768, L: 12, H: 12, V: 50257 };

/** GPT-2 small: learned positions, LayerNorm with bias, gelu_tanh MLP 4C, tied embeddings. */
function gpt2Spec(C: number, L: number, H: number, V: number, ctx: number): ModelSpec {
  return {
    format: 'brickwork.spec', version: 1, family: 'gpt2', vocabSize: V, dModel: C, maxContext: ctx,
    norm: { kind: 'layernorm', eps: 1e-5, bias: true }, learnedPositions: true, tiedEmbeddings: true, finalNorm: true,
    layers: Array.from({ length: L }, () => ({
      wiring: 'serial' as const, norm: 'pre' as const, sublayers: [
        { kind: 'attn' as const, heads: H, kvHeads: H, headDim: C / H, qkvBias: true, outBias: true, rope: false },
        { kind: 'ffn' as const, hidden: 4 * C, gated: false, activation: 'gelu_tanh' as const, bias: true },
      ],
    })),
  };
}

const be = await getBackend(device);
const spec = gpt2Spec(shape.C, shape.L, shape.H, shape.V, Math.max(T, 1024));
const model = randomModel(spec, be, { seed: 1 });
console.log(`model: GPT-2-shaped, C ${shape.C}, L ${shape.L}, H ${shape.H}, V ${shape.V}: ${(model.numParams / 1e6).toFixed(1)}M parameters; batch ${B} × ${T} tokens; ${device}`);
const opt = new AdamW(model, { lr: 1e-4, weightDecay: 0.1, clip: 1 });
let seed = 1;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % shape.V; };
const batch = () => ({ ids: Int32Array.from({ length: B * T }, rnd), targets: Int32Array.from({ length: B * T }, rnd), B, T });
const step = async () => {
  const { loss, grads } = await gradients(model, batch());
  await opt.step(grads);
  return loss;
};
/** Tokens/s over `steps` training steps, after one warm-up step (pipelines, buffer pool). */
const rate = async (what: string) => {
  await step();
  const t0 = performance.now();
  let last = 0;
  for (let i = 0; i < steps; i++) last = await step();
  const seconds = (performance.now() - t0) / 1000;
  const r = (B * T * steps) / seconds;
  console.log(`brickwork ${what}: ${r.toFixed(0)} tokens/s (${(seconds / steps * 1000).toFixed(0)} ms/step, last loss ${last.toFixed(3)})`);
  return r;
};
const ours = await rate(device);

let peerRate: number | undefined;
if (process.argv.includes('--peer')) {
  const script = fileURLToPath(new URL('./peer_train.py', import.meta.url));
  const out = execFileSync('python3', [script, '--C', String(shape.C), '--L', String(shape.L), '--H', String(shape.H), '--V', String(shape.V), '--T', String(T), '--B', String(B), '--steps', String(steps)], { encoding: 'utf8' });
  const peer = JSON.parse(out.trim().split('\n').pop()!) as { tokens_per_second: number; attention: string; eager_tokens_per_second: number; eager_attention: string; device: string; torch: string };
  console.log(`pytorch ${peer.torch} on ${peer.device} (fp32, TF32 off), attention '${peer.attention}' (transformers' default): ${peer.tokens_per_second.toFixed(0)} tokens/s`);
  console.log(`pytorch, attention '${peer.eager_attention}': ${peer.eager_tokens_per_second.toFixed(0)} tokens/s`);
  console.log(`ratio brickwork / pytorch: ${(ours / peer.tokens_per_second).toFixed(3)} (against eager attention: ${(ours / peer.eager_tokens_per_second).toFixed(3)})`);
  peerRate = peer.tokens_per_second;
} else console.log('peer: not run (add --peer on a machine with PyTorch + transformers)');

// The matmul tile variants last, after the figures above are out.
if (be instanceof WebGpuBackend && (!small || process.argv.includes('--tiles'))) {
  const [tile, stages] = [be.matmulTile, be.matmulStages];
  for (const [t, st] of [[128, 1], [128, 2]] as const) {
    be.matmulTile = t;
    be.matmulStages = st;
    const r = await rate(`${device}, matmul tile ${t}${st === 2 ? ', two buffers' : ''}`);
    console.log(`  ${(r / ours).toFixed(3)}× the default tile${peerRate ? `; ratio to pytorch ${(r / peerRate).toFixed(3)}` : ''}`);
  }
  [be.matmulTile, be.matmulStages] = [tile, stages];
}
if ('destroy' in be) (be as { destroy(): void }).destroy();
