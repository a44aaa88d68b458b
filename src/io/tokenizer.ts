// Tokenizer: tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers. Encoding adds
// no special tokens; decoding keeps spaces as they are (transformers 5 does not clean them up unless
// the config asks), so ids and text round-trip as HF does.

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { CheckpointError, UsageError } from '../util/errors.ts';
import { folderFiles, readJson, type ModelFiles } from './files.ts';

const DAMAGED = 'the file is damaged or truncated; re-save or re-download it';

export class Tokenizer {
  private constructor(private readonly tok: HfTokenizer, readonly cleanUpSpaces: boolean, readonly config: Record<string, unknown>) {}

  /**
   * Load `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a folder on disk.
   * Node only; loadModel loads the tokenizer with the model.
   */
  static async fromDir(dir: string): Promise<Tokenizer> {
    // NOTE: imported on call, so the browser bundle never pulls in node:fs.
    let fs: typeof import('node:fs'), path: typeof import('node:path');
    try {
      [fs, path] = [await import('node:fs'), await import('node:path')];
    } catch {
      throw new UsageError('Tokenizer.fromDir reads a folder on disk, which needs Node', 'use Tokenizer.fromFiles(files), or loadModelFromUrl, which loads the tokenizer too');
    }
    return Tokenizer.fromFiles(folderFiles(dir, { existsSync: fs.existsSync, readFileSync: (p) => fs.readFileSync(p), join: path.join }));
  }

  /** Load `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model's files. */
  static fromFiles(files: ModelFiles): Tokenizer {
    const file = files.where('tokenizer.json');
    if (!files.has('tokenizer.json')) throw new CheckpointError(file, 'not found', 'the model folder needs a tokenizer.json (save it with the model, or pass token ids)');
    const json = readJson(files, 'tokenizer.json', DAMAGED);
    const cfg = files.has('tokenizer_config.json') ? readJson(files, 'tokenizer_config.json', DAMAGED) : {};
    if (typeof json !== 'object' || json === null || typeof (json as { model?: unknown }).model !== 'object')
      throw new CheckpointError(file, "malformed: expected an object with a 'model' section", 'the file is not a Hugging Face tokenizer.json; re-save it with the tokenizers library');
    let tok: HfTokenizer;
    try {
      tok = new HfTokenizer(json as object, cfg as object);
      tok.encode('ok', { add_special_tokens: false });
    } catch (e) {
      throw new CheckpointError(file, `malformed tokenizer: ${(e as Error).message}`, 'the file could not be understood as a Hugging Face tokenizer.json; re-save it with the tokenizers library');
    }
    return new Tokenizer(tok, (cfg as { clean_up_tokenization_spaces?: boolean }).clean_up_tokenization_spaces === true, cfg as Record<string, unknown>);
  }

  /** Text → ids, without special tokens. */
  encode(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** ids → text. */
  decode(ids: number[]): string {
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  /** Id of a token string, if it is in the vocabulary. */
  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
}
