// Tokenizer: tokenizer.json (+ tokenizer_config.json) through @huggingface/tokenizers. Encoding adds
// no special tokens; decoding keeps spaces as they are (transformers 5 does not clean them up unless
// the config asks), so ids and text round-trip as HF does.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { CheckpointError } from '../util/errors.ts';

export class Tokenizer {
  private constructor(private readonly tok: HfTokenizer, readonly cleanUpSpaces: boolean, readonly config: Record<string, unknown>) {}

  /** Load `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a folder. */
  static fromDir(dir: string): Tokenizer {
    const file = join(dir, 'tokenizer.json');
    if (!existsSync(file)) throw new CheckpointError(file, 'not found', 'the model folder needs a tokenizer.json (save it with the model, or pass token ids)');
    const json = parseJson(file);
    const cfgFile = join(dir, 'tokenizer_config.json');
    const cfg = existsSync(cfgFile) ? parseJson(cfgFile) : {};
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

function parseJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(file, `cannot be read: ${(e as Error).message}`, 'check the path and permissions');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(file, `is not valid JSON (${(e as Error).message})`, 'the file is damaged or truncated; re-save or re-download it');
  }
}
