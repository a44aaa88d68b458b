// Typed access to a Hugging Face config.json: each getter names the file and field in its error.

import { CheckpointError, UnsupportedModelError } from '../../util/errors.ts';

export class HfConfig {
  constructor(readonly raw: Record<string, unknown>, readonly file: string) {}

  /** The file's name, for hints. */
  private get name(): string {
    return this.file.split(/[\\/]/).pop() || 'config.json';
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  int(key: string, fallback?: number): number {
    const v = this.raw[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      throw new CheckpointError(this.file, `field '${key}': expected a non-negative integer, found ${JSON.stringify(v)}`, `fix ${this.name} or re-save the model with transformers`);
    return v;
  }

  num(key: string, fallback?: number): number {
    const v = this.raw[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new CheckpointError(this.file, `field '${key}': expected a number, found ${JSON.stringify(v)}`, `fix ${this.name} or re-save the model with transformers`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new CheckpointError(this.file, `field '${key}': expected true/false, found ${JSON.stringify(v)}`, `fix ${this.name}`);
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.raw[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== 'string') throw new CheckpointError(this.file, `field '${key}': expected a string, found ${JSON.stringify(v)}`, `fix ${this.name}`);
    return v;
  }

  /** Token id(s) of a field that may be a number or a list (eos_token_id). */
  ids(key: string): number[] | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isInteger(x))) throw new CheckpointError(this.file, `field '${key}': expected token id(s), found ${JSON.stringify(v)}`, `fix ${this.name}`);
    return list as number[];
  }

  unsupported(what: string, hint = 'convert the model to a supported configuration, or open an issue'): never {
    throw new UnsupportedModelError(`${this.file}: ${what}`, hint);
  }
}
