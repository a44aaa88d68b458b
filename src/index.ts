// Public API of Brickwork. User-facing layers (cli/, server/, web/) import only from here.

export * from './browser.ts';

// Node only: model folders and safetensors files on disk.
export { loadModel, readModelSource } from './io/load.ts';
export { saveNative, type SaveOptions } from './io/native.ts';
export { writeFileAtomic, writeDirAtomic, recoverDirAtomic } from './io/atomic.ts';
export { openTensors, writeSafetensors, SafetensorsFile } from './io/safetensors.ts';

// Node only: training runs with a log and checkpoints on disk.
export { train, evaluate, brickOfName, CHECKPOINT_DIR, LOG_FILE, type TrainOptions, type TrainIo, type TrainResult, type StepRecord } from './train/loop.ts';
export { nestedWidthSchedule } from './train/matformer.ts';
export { saveCheckpoint, readTrainerState, loadOptimizerState, isCheckpoint, type TrainerState } from './train/checkpoint.ts';
