// Public API of Brickwork. User-facing layers (cli/, server/, web/) import only from here.

export * from './browser.ts';

// Node only: model folders and safetensors files on disk.
export { loadModel, readModelSource } from './io/load.ts';
export { saveNative, type SaveOptions } from './io/native.ts';
export { writeFileAtomic } from './io/atomic.ts';
export { openTensors, writeSafetensors, SafetensorsFile } from './io/safetensors.ts';
