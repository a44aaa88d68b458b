// `brickwork convert`: load a model (HF or native) and write it as a native Brickwork checkpoint
// (brickwork.json + model.safetensors + tokenizer files), atomically. Refuses to write over the source
// folder, and over a non-empty folder unless --force. The whole model passes through memory once.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { loadModel, saveNative, UsageError } from '../index.ts';
import { deviceOption, displayPath, modelOption, resolveDevice, samePath, warnUnused, type Device } from './common.ts';
import { fmtBytes, table } from './format.ts';

type StoreDtype = 'f32' | 'f16' | 'bf16';
const STORE_DTYPES: StoreDtype[] = ['f32', 'f16', 'bf16'];

interface ConvertFlags {
  model: string;
  out: string;
  dtype?: StoreDtype;
  force?: boolean;
  device: Device;
}

export function convertCommand(): Command {
  return new Command('convert')
    .description('write a model as a native Brickwork checkpoint (spec + canonical safetensors + tokenizer files)')
    .addOption(modelOption())
    .requiredOption('--out <dir>', 'folder to write (created; replaced atomically)')
    .addOption(new Option('--dtype <dtype>', 'storage dtype of the weights (default: the source\'s dtype, so nothing is rounded)').choices(STORE_DTYPES))
    .option('--force', 'replace --out even if it already holds files')
    .addOption(deviceOption())
    .action(async (f: ConvertFlags) => {
      if (samePath(f.model, f.out)) throw new UsageError(`--out ${f.out} is the source folder`, 'write the converted model to a new folder');
      if (existsSync(f.out)) {
        if (!statSync(f.out).isDirectory()) throw new UsageError(`--out ${f.out} exists and is not a folder`, 'pick another --out path');
        if (readdirSync(f.out).length > 0 && !f.force)
          throw new UsageError(`--out ${f.out} already holds files`, 'pick an empty or new folder, or pass --force to replace it');
      }
      const { backend } = await resolveDevice(f.device);
      const lm = warnUnused(await loadModel(f.model, { backend }));
      const source = lm.storedDtype as string;
      const dtype: StoreDtype = f.dtype ?? (STORE_DTYPES.includes(source as StoreDtype) ? (source as StoreDtype) : 'f32');
      await saveNative(lm.model, f.out, {
        dtype,
        tokenizerDir: f.model,
        source: { from: resolve(f.model), kind: lm.source.kind, ...(lm.source.modelType ? { modelType: lm.source.modelType } : {}), storedDtype: source },
      });
      const note = dtype === source ? 'same as the source: lossless'
        : dtype === 'f32' ? `widened from ${source}: lossless` : `rounded from ${source}`;
      const files = readdirSync(f.out).sort().map((name) => [name, statSync(join(f.out, name)).size] as const);
      const total = files.reduce((s, [, n]) => s + n, 0);
      process.stdout.write(`wrote ${displayPath(f.out)}: native checkpoint, weights in ${dtype} (${note})\n`);
      process.stdout.write(table([{ header: 'file' }, { header: 'size', align: 'right' }],
        [...files.map(([name, n]) => [name, fmtBytes(n)]), 'rule', ['total', fmtBytes(total)]], '  ') + '\n');
      if (!lm.tokenizer) process.stdout.write('note: the source has no tokenizer.json, so none was copied\n');
    });
}
