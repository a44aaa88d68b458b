// Golden parity on WebGPU, with the CPU tolerances (checks in parity-check.ts). On SwiftShader (a CPU
// emulating the GPU, as in CI) only the bundled model runs: the others' 50k-token head and longer prompts
// take many minutes there. BRICKWORK_GPU_PARITY=all runs them anyway.

import { test } from 'node:test';
import { checkParity } from './parity-check.ts';
import { withGpu } from './gpu-helpers.ts';

for (const name of ['tiny-llama', 'tiny-gpt2', 'tiny-mixtral']) {
  test(`parity on WebGPU: ${name}`, (t) => withGpu(t, async (gpu) => {
    const emulated = /swiftshader/i.test(`${gpu.info.vendor} ${gpu.info.description}`);
    if (emulated && name !== 'tiny-llama' && process.env.BRICKWORK_GPU_PARITY !== 'all')
      return void t.skip('SwiftShader (CPU-emulated GPU) is too slow for this model here; set BRICKWORK_GPU_PARITY=all to run it');
    await checkParity(t, name, gpu);
  }));
}
