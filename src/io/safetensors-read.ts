// Reading safetensors (https://github.com/huggingface/safetensors, format section) from any byte source:
// the header is fully validated when a reader is created, and each tensor is read on demand, so a
// multi-GB file on disk costs nothing until its tensors are asked for. Dtypes: F32, F16, BF16, I32, and
// I64 (narrowed to i32 with a range check). Assumes a little-endian host, as every WebGPU/Node target is.
// No Node modules: files on disk are opened by safetensors.ts, bytes in memory (fetched) by `fromBytes`.

import { CheckpointError, TensorMismatchError } from '../util/errors.ts';
import { toF32, type DType, type HostArray } from '../tensor/dtype.ts';

/** Shape, dtype and size of one stored tensor. */
export interface TensorInfo {
  /** Dtype `read()` returns (I64 is narrowed to 'i32'). */
  dtype: DType;
  shape: number[];
  /** Bytes the tensor occupies in the file (for I64, twice what `read()` returns). */
  byteLength: number;
  /** Dtype as written in the file header, e.g. 'BF16' or 'I64'. */
  storedDtype: string;
}

/** A tensor as stored: f16/bf16 come back as raw 16-bit patterns in a Uint16Array. */
export interface HostTensor {
  dtype: DType;
  shape: number[];
  data: HostArray;
}

/** What SafetensorsFile and TensorStore have in common: read-only, by-name access to tensors. */
export interface TensorSource {
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): HostTensor;
  readF32(name: string): Float32Array;
  close(): void;
}

// Header dtype → (dtype returned, bytes per stored element). Only these can be read.
const READABLE: Record<string, { dtype: DType; bytes: number }> = {
  F32: { dtype: 'f32', bytes: 4 },
  F16: { dtype: 'f16', bytes: 2 },
  BF16: { dtype: 'bf16', bytes: 2 },
  I32: { dtype: 'i32', bytes: 4 },
  I64: { dtype: 'i32', bytes: 8 },
};
// Valid safetensors dtypes Brickwork does not read: rejected with "unsupported", not "unknown".
const KNOWN_UNSUPPORTED = new Set(['BOOL', 'U8', 'I8', 'U16', 'I16', 'U32', 'U64', 'F64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64']);

// The reference implementation refuses headers over 100 MB; a larger length is corruption, not a model.
const MAX_HEADER_BYTES = 100_000_000;

const TRUNCATED_HINT = 'the file looks truncated: re-download or re-save it';
const CORRUPT_HINT = 'the header is corrupt or was written by a broken tool: re-download or re-save the file';

interface Entry {
  name: string;
  info: TensorInfo;
  begin: number; // offset inside the data section
  end: number;
}

export function shapeStr(shape: number[]): string {
  return `[${shape.join(', ')}]`;
}

export function numel(shape: number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Levenshtein distance, for "did you mean" hints only. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** Up to `k` names closest to `name`, for a hint line. */
export function closeNames(name: string, names: string[], k = 3): string[] {
  return names
    .map((n) => ({ n, d: editDistance(name, n) }))
    .sort((x, y) => x.d - y.d || (x.n < y.n ? -1 : 1))
    .slice(0, k)
    .map((x) => x.n);
}

export function missingTensor(name: string, where: string, names: string[]): TensorMismatchError {
  const close = closeNames(name, names);
  const hint = close.length
    ? `closest names: ${close.map((n) => `'${n}'`).join(', ')}; call names() to list all ${names.length}`
    : `${where} holds no tensors`;
  return new TensorMismatchError(name, `not found in ${where} (${names.length} tensors)`, hint);
}

/** Random access to the bytes of one file: a file descriptor in Node, an array in memory. */
export interface ByteSource {
  readonly size: number;
  /** Fill `into` with the bytes from `offset` on; returns how many were read (fewer only at the end). */
  readInto(into: Uint8Array, offset: number): number;
  close(): void;
}

function memoryBytes(data: Uint8Array): ByteSource {
  return {
    size: data.byteLength,
    readInto(into, offset) {
      const part = data.subarray(offset, offset + into.byteLength);
      into.set(part);
      return part.byteLength;
    },
    close() {},
  };
}

/**
 * One safetensors file, read on demand from a ByteSource. `SafetensorsFile.open(path)` (safetensors.ts)
 * reads a file on disk; `fromBytes` reads one held in memory.
 *
 * @example
 * const bytes = new Uint8Array(await (await fetch('/models/tiny-llama/model.safetensors')).arrayBuffer());
 * const f = SafetensorsReader.fromBytes(bytes, 'model.safetensors');
 * const w = f.readF32('model.embed_tokens.weight'); // f32 values of a bf16 tensor
 */
export class SafetensorsReader implements TensorSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Absolute file offset where the data section starts (8 + header length). */
  readonly dataStart: number;
  private bytes: ByteSource | undefined;
  private readonly entries: Map<string, Entry>;
  private readonly order: string[];

  /** Validates the header of `bytes` (CheckpointError naming `path` on any problem; no tensor is read). */
  protected constructor(path: string, bytes: ByteSource) {
    const { dataStart, entries, metadata } = parseHeader(path, bytes);
    this.path = path;
    this.bytes = bytes;
    this.dataStart = dataStart;
    this.metadata = metadata;
    this.entries = new Map(entries.map((e) => [e.name, e]));
    this.order = entries.map((e) => e.name);
  }

  /** A safetensors file held in memory (e.g. fetched); `path` names it in errors. */
  static fromBytes(bytes: Uint8Array, path: string): SafetensorsReader {
    return new SafetensorsReader(path, memoryBytes(bytes));
  }

  /** Tensor names in file (data offset) order. */
  names(): string[] {
    return [...this.order];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { ...e.info, shape: [...e.info.shape] };
  }

  /** Read a tensor's stored values into a fresh, aligned array (f16/bf16 as bit patterns). */
  read(name: string): HostTensor {
    const e = this.entry(name);
    const bytes = this.readBytes(e);
    const { dtype, shape, storedDtype } = e.info;
    let data: HostArray;
    if (storedDtype === 'I64') {
      data = narrowI64(this.path, name, bytes);
    } else if (dtype === 'f32') {
      data = new Float32Array(bytes.buffer);
    } else if (dtype === 'i32') {
      data = new Int32Array(bytes.buffer);
    } else {
      data = new Uint16Array(bytes.buffer);
    }
    return { dtype, shape: [...shape], data };
  }

  /** Read a tensor widened to f32 (exact for f16/bf16; i32 rounded to the nearest f32 beyond ±2^24). */
  readF32(name: string): Float32Array {
    const t = this.read(name);
    // read() already returns a fresh array, so f32 needs no second copy.
    return t.dtype === 'f32' ? (t.data as Float32Array) : toF32(t.data, t.dtype);
  }

  /** Release the file (descriptor). Safe to call twice; reads after close throw. */
  close(): void {
    this.bytes?.close();
    this.bytes = undefined;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw missingTensor(name, this.path, this.order);
    return e;
  }

  private readBytes(e: Entry): Uint8Array {
    if (!this.bytes) throw new CheckpointError(this.path, `cannot read tensor '${e.name}': the file was closed`, 'read tensors before calling close()');
    // NOTE: a fresh ArrayBuffer is 8-byte aligned, so the typed-array view over it is always valid, even
    // when the tensor's offset in the file is odd (which the format allows).
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(e.end - e.begin);
    } catch {
      throw new CheckpointError(this.path, `tensor '${e.name}' (${e.end - e.begin} bytes) is too large for one array`, 'split the tensor or use a smaller checkpoint');
    }
    const got = this.bytes.readInto(bytes, this.dataStart + e.begin);
    if (got < bytes.byteLength) {
      throw new CheckpointError(this.path, `tensor '${e.name}': file ended after ${got} of ${bytes.byteLength} bytes (it shrank after opening?)`, TRUNCATED_HINT);
    }
    return bytes;
  }
}

/** I64 → Int32Array, refusing values that do not fit (they would silently wrap otherwise). */
function narrowI64(file: string, name: string, bytes: Uint8Array): Int32Array {
  const src = new BigInt64Array(bytes.buffer);
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i];
    if (v > 2147483647n || v < -2147483648n) {
      throw new CheckpointError(file, `tensor '${name}' is I64 and element ${i} = ${v} does not fit in i32`, 'Brickwork reads I64 tensors as i32; convert the tensor to I32 (or F32) before loading');
    }
    out[i] = Number(v);
  }
  return out;
}

/** Read and validate the header of an open file. Every check names the file and, where one is at fault, the tensor. */
function parseHeader(file: string, src: ByteSource): { dataStart: number; entries: Entry[]; metadata: Record<string, string> } {
  const size = src.size;
  if (size < 8) {
    throw new CheckpointError(file, `file is ${size} bytes, shorter than the 8-byte header length every safetensors file starts with`, TRUNCATED_HINT);
  }
  const lenBuf = new Uint8Array(8);
  src.readInto(lenBuf, 0);
  const headerLen = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(size - 8)) {
    throw new CheckpointError(file, `header length ${headerLen} exceeds the ${size - 8} bytes that follow it (file is ${size} bytes)`,
      headerLen > BigInt(MAX_HEADER_BYTES) ? 'this is not a safetensors file, or its first 8 bytes are corrupt' : TRUNCATED_HINT);
  }
  const n = Number(headerLen);
  if (n > MAX_HEADER_BYTES) throw new CheckpointError(file, `header length ${n} exceeds the 100 MB limit of the format`, CORRUPT_HINT);
  if (n < 2) throw new CheckpointError(file, `header length ${n} is too short to hold a JSON object`, CORRUPT_HINT);

  const headerBytes = new Uint8Array(n);
  src.readInto(headerBytes, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new CheckpointError(file, `header (${n} bytes at offset 8) is not valid UTF-8 JSON: ${(err as Error).message}`, `${CORRUPT_HINT} (or it is not a safetensors file)`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError(file, `header must be a JSON object, found ${Array.isArray(header) ? 'an array' : typeof header}`, CORRUPT_HINT);
  }

  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, raw);
      continue;
    }
    const where = `tensor '${name}'`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CheckpointError(file, `${where}: header entry must be an object with dtype, shape and data_offsets`, CORRUPT_HINT);
    }
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    const missing = (['dtype', 'shape', 'data_offsets'] as const).filter((k) => (raw as Record<string, unknown>)[k] === undefined);
    if (missing.length) throw new CheckpointError(file, `${where}: header entry is missing ${missing.join(', ')}`, CORRUPT_HINT);

    if (typeof dtype !== 'string') throw new CheckpointError(file, `${where}: dtype must be a string, found ${JSON.stringify(dtype)}`, CORRUPT_HINT);
    const readable = READABLE[dtype];
    if (!readable) {
      if (KNOWN_UNSUPPORTED.has(dtype)) {
        throw new CheckpointError(file, `${where}: dtype ${dtype} is not supported (Brickwork reads F32, F16, BF16, I32, I64)`, 'convert the checkpoint to F32, F16 or BF16 (e.g. with torch and safetensors.torch.save_file)');
      }
      throw new CheckpointError(file, `${where}: unknown dtype '${dtype}' (expected one of F32, F16, BF16, I32, I64)`, CORRUPT_HINT);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw new CheckpointError(file, `${where}: shape must be an array of non-negative integers, found ${JSON.stringify(shape)}`, CORRUPT_HINT);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
      throw new CheckpointError(file, `${where}: data_offsets must be [begin, end] with non-negative integers, found ${JSON.stringify(offsets)}`, CORRUPT_HINT);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) throw new CheckpointError(file, `${where}: data_offsets [${begin}, ${end}] end before they begin`, CORRUPT_HINT);
    const count = numel(shape);
    const need = count * readable.bytes;
    if (!Number.isSafeInteger(need) || end - begin !== need) {
      throw new CheckpointError(file,
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${shapeStr(shape)} × ${dtype} needs ${need} bytes`,
        CORRUPT_HINT);
    }
    entries.push({ name, begin, end, info: { dtype: readable.dtype, shape: [...shape], byteLength: need, storedDtype: dtype } });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : 1));
  // Checked in file order, so a truncated file names the first tensor that was cut off.
  const cut = entries.filter((e) => e.end > dataSize);
  if (cut.length) {
    const e = cut[0];
    throw new CheckpointError(file,
      `tensor '${e.name}': data ends at byte ${e.end} of the data section, but the data section has only ${dataSize} bytes ` +
      `(file is ${size} bytes; ${cut.length} tensor${cut.length === 1 ? '' : 's'} affected)`,
      TRUNCATED_HINT);
  }
  // Overlapping ranges mean two tensors share bytes: a corrupt header, never a valid file.
  let prev: Entry | undefined;
  for (const e of entries) {
    if (e.end === e.begin) continue; // empty tensors occupy no bytes
    if (prev && e.begin < prev.end) {
      throw new CheckpointError(file,
        `tensors '${prev.name}' [${prev.begin}, ${prev.end}] and '${e.name}' [${e.begin}, ${e.end}] have overlapping data_offsets`,
        CORRUPT_HINT);
    }
    prev = e;
  }
  return { dataStart, entries, metadata };
}

function parseMetadata(file: string, raw: unknown): Record<string, string> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CheckpointError(file, `__metadata__ must be an object of strings, found ${JSON.stringify(raw)}`, CORRUPT_HINT);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new CheckpointError(file, `__metadata__.${k} must be a string, found ${JSON.stringify(v)}`, CORRUPT_HINT);
    out[k] = v;
  }
  return out;
}
