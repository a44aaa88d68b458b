// Fast CPU kernels that replace reference kernels of the same op. Each one is tested against
// the reference in test/cpu-fast.test.ts; the reference stays the definition.

import type { CpuKernelTable } from '../kernels.ts';

export const FAST_KERNELS: Partial<CpuKernelTable> = {};
