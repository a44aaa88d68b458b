// WebGPU test helpers: one device per test file, destroyed at the end (a live device keeps Node
// running), and a clear skip message where no adapter exists.

import { after, type TestContext } from 'node:test';
import { NoWebGpuError, WebGpuBackend } from '../src/index.ts';

let acquired: Promise<WebGpuBackend | string> | undefined;

// Registered at import (file level): a hook registered inside a test would run when that test ends.
after(async () => {
  const b = await acquired;
  if (b && typeof b !== 'string') b.destroy();
});

/** The WebGPU backend, or a reason to skip. */
export function gpu(): Promise<WebGpuBackend | string> {
  acquired ??= WebGpuBackend.create().then((b) => b, (e: unknown) => {
    if (e instanceof NoWebGpuError) return `${e.message.split('\n')[0]} (without a GPU: apt-get install chromium libvulkan1 and set VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json)`;
    throw e;
  });
  return acquired;
}

/** Run `body` with the backend, or skip the test saying why. */
export async function withGpu(t: TestContext, body: (be: WebGpuBackend) => Promise<void>): Promise<void> {
  const be = await gpu();
  if (typeof be === 'string') return void t.skip(be);
  await body(be);
}
