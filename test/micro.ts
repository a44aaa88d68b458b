// The micro-* gradient fixtures (see ../shared/fixtures/README.md): the model, its batch, PyTorch's
// gradients mapped to canonical names through the family's weight map (GPT-2's Conv1D transposes and
// fused-qkv splits included, exactly as weights at load), and grads.json.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CpuBackend, loadModel, type Backend, type Model, type Tensor } from '../src/index.ts';
import { gradients, type Batch } from '../src/train/loss.ts';
import { AdamW } from '../src/train/optimizer.ts';
import { assembleModel, readSpec } from '../src/io/load-files.ts';
import { folderFiles } from '../src/io/files.ts';
import { SafetensorsReader, type TensorSource } from '../src/io/safetensors-read.ts';
import * as fs from 'node:fs';
import { FIXTURES } from './helpers.ts';

export const MICRO = ['micro-llama', 'micro-gpt2', 'micro-mixtral'];

export function microSkip(name: string): string | undefined {
  const dir = join(FIXTURES, name);
  return existsSync(join(dir, 'grads.safetensors')) ? undefined : `fixture ${name} not found at ${dir}; set BRICKWORK_FIXTURES to the shared fixtures folder`;
}

/** A view of a safetensors file that shows only the tensors named `<prefix><name>`, as `<name>`. */
function prefixed(src: TensorSource, prefix: string): TensorSource {
  const strip = (n: string) => prefix + n;
  return {
    metadata: src.metadata,
    names: () => src.names().filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)),
    has: (n) => src.has(strip(n)),
    info: (n) => src.info(strip(n)),
    read: (n) => src.read(strip(n)),
    readF32: (n) => src.readF32(strip(n)),
    close: () => src.close(),
  };
}

/** The micro fixture: model, batch, PyTorch's gradients in canonical layout, and grads.json. */
export async function loadMicro(name: string, backend: Backend) {
  const dir = join(FIXTURES, name);
  const { model } = await loadModel(dir, { backend });
  const bytes = readFileSync(join(dir, 'grads.safetensors'));
  const reader = () => SafetensorsReader.fromBytes(new Uint8Array(bytes), join(dir, 'grads.safetensors'));
  const files = folderFiles(dir, { existsSync: fs.existsSync, readFileSync: fs.readFileSync, join });
  const cpu = new CpuBackend({ reference: true });
  const reference = assembleModel(readSpec(files), prefixed(reader(), 'grad.'), files, { backend: cpu }).model;
  const r = reader();
  const ids = r.read('input_ids'), targets = r.read('targets');
  r.close();
  const [B, T] = r.info('input_ids').shape;
  const json = JSON.parse(readFileSync(join(dir, 'grads.json'), 'utf8')) as { loss: number; adamw_losses: number[]; adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number } };
  return { model, batch: { ids: ids.data as Int32Array, targets: targets.data as Int32Array, B, T }, reference, json };
}

/** Max |a − b| / max |b| over every weight, and the worst weight. */
export async function compareGrads(got: Map<string, { toF32(): Promise<Float32Array> }>, reference: Model) {
  let worst = { name: '', rel: 0 };
  for (const [name, ref] of reference.weights) {
    const g = got.get(name);
    assert.ok(g, `no gradient for ${name}`);
    const a = await g.toF32(), b = await ref.toF32();
    let err = 0, scale = 0;
    for (let i = 0; i < b.length; i++) { err = Math.max(err, Math.abs(a[i] - b[i])); scale = Math.max(scale, Math.abs(b[i])); }
    const rel = err / scale;
    if (rel > worst.rel) worst = { name, rel };
  }
  return worst;
}


/**
 * Evidence that a fixture's gradients were taken with dropout on: exact zeros in the gradient of the
 * learned position table at positions the batch uses (each sums two rows; dropout zeroes both 1% of
 * the time, an eval-mode gradient never). Undefined when there is no such evidence.
 */
export function dropoutSignature(name: string): string | undefined {
  const dir = join(FIXTURES, name);
  if (!existsSync(join(dir, 'grads.safetensors'))) return undefined;
  const r = SafetensorsReader.fromBytes(new Uint8Array(readFileSync(join(dir, 'grads.safetensors'))), name);
  try {
    const wpe = r.names().find((n) => /^grad\..*wpe\.weight$/.test(n));
    if (!wpe) return undefined;
    const [, C] = r.info(wpe).shape;
    const T = r.info('input_ids').shape[1];
    const g = r.readF32(wpe);
    let zeros = 0;
    for (let i = 0; i < T * C; i++) if (g[i] === 0) zeros++;
    return zeros > 0 ? `${zeros} of the ${T * C} position-embedding gradients of used positions are exactly zero` : undefined;
  } finally {
    r.close();
  }
}

/**
 * d/dh loss(w + h·u) by central differences against ⟨∇loss, u⟩, for `trials` random directions u over
 * every weight (the model's weights are restored afterwards).
 */
export async function directionalDerivatives(model: Model, batch: Batch, grads: Map<string, Tensor>, trials = 3): Promise<{ fd: number; grad: number }[]> {
  const be = model.backend;
  let seed = 7;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 - 0.5; };
  const out: { fd: number; grad: number }[] = [];
  for (let trial = 0; trial < trials; trial++) {
    const dirs = new Map<string, Float32Array>();
    let dot = 0;
    for (const [name, w] of model.weights) {
      const u = Float32Array.from({ length: w.size }, rnd);
      dirs.set(name, u);
      const g = await grads.get(name)!.toF32();
      for (let i = 0; i < u.length; i++) dot += g[i] * u[i];
    }
    const h = 1e-3;
    const lossAt = async (sign: number) => {
      const saved = new Map(model.weights);
      for (const [name, w] of saved) {
        const base = await w.toF32(), u = dirs.get(name)!;
        model.weights.set(name, be.upload(base.map((x, i) => x + sign * h * u[i]), w.shape, 'f32'));
      }
      const { loss } = await gradients(model, batch, { params: ['final_norm.bias'] });
      for (const [name, w] of saved) { model.weights.get(name)!.dispose(); model.weights.set(name, w); }
      return loss;
    };
    out.push({ fd: ((await lossAt(1)) - (await lossAt(-1))) / (2 * h), grad: dot });
  }
  return out;
}

/** Five AdamW steps with the fixture's hyperparameters: the loss before each step must match PyTorch's. */
export async function checkAdamWLosses(name: string, backend: Backend): Promise<void> {
  const { model, batch, json } = await loadMicro(name, backend);
  const a = json.adamw;
  const opt = new AdamW(model, { lr: a.lr, betas: a.betas, eps: a.eps, weightDecay: a.weight_decay, decay: 'all' });
  for (let i = 0; i < json.adamw_losses.length; i++) {
    const { loss, grads } = await gradients(model, batch);
    assert.ok(Math.abs(loss - json.adamw_losses[i]) < 1e-4, `${backend.name} step ${i}: loss ${loss} vs PyTorch ${json.adamw_losses[i]}`);
    await opt.step(grads);
  }
}
