// Backend registry: named factories, and `getBackend(name)` for 'cpu', 'cpu-reference' and 'webgpu'
// ('auto': WebGPU when an adapter exists, else cpu). The interface itself lives in tensor/tensor.ts.

import type { Backend } from '../tensor/tensor.ts';
import { UsageError } from '../util/errors.ts';
import { CpuBackend } from './cpu/backend.ts';
import { startMatmulThreads } from './cpu/fast/matmul.ts';
import { WebGpuBackend } from './webgpu/backend.ts';

export type { Backend } from '../tensor/tensor.ts';

type Factory = () => Backend | Promise<Backend>;
const factories = new Map<string, Factory>([
  ['cpu', async () => {
    // Large matmuls split across worker threads (one per core, sleeping when idle; they never keep
    // the process alive; none in browsers). BRICKWORK_THREADS=1 keeps everything on the main thread.
    const n = Number((globalThis as { process?: NodeJS.Process }).process?.env.BRICKWORK_THREADS ?? 0);
    await startMatmulThreads(n > 0 ? n : undefined);
    return new CpuBackend();
  }],
  ['cpu-reference', () => new CpuBackend({ reference: true })],
  ['webgpu', () => WebGpuBackend.create()],
]);

/** Register a backend factory under a name (used by optional backends such as WebGPU). */
export function registerBackend(name: string, factory: Factory): void {
  factories.set(name, factory);
}

/** Create a backend by name. */
export async function getBackend(name = 'cpu'): Promise<Backend> {
  const f = factories.get(name);
  if (!f) throw new UsageError(`unknown backend '${name}'`, `choose one of: ${[...factories.keys()].join(', ')}`);
  return f();
}

export { CpuBackend, WebGpuBackend };
