// Golden parity on WebGPU, with the CPU tolerances (checks in parity-check.ts), for every tiny fixture.
// On SwiftShader (a CPU emulating the GPU, as in CI) tiny-gpt2 takes about 5 minutes (its 50k-token head
// on every greedy step) and tiny-mixtral about 2; BRICKWORK_GPU_PARITY=tiny-llama runs only the bundled
// model, for a quicker local run.

import { test } from 'node:test';
import { checkParity } from './parity-check.ts';
import { withGpu } from './gpu-helpers.ts';

const only = process.env.BRICKWORK_GPU_PARITY?.split(',').filter((n) => n && n !== 'all');
for (const name of ['tiny-llama', 'tiny-gpt2', 'tiny-mixtral']) {
  test(`parity on WebGPU: ${name}`, (t) => withGpu(t, async (gpu) => {
    if (only?.length && !only.includes(name)) return void t.skip(`BRICKWORK_GPU_PARITY=${process.env.BRICKWORK_GPU_PARITY} leaves it out`);
    await checkParity(t, name, gpu);
  }));
}
