// Policy specs: the one-string form users type (`ffn-skip:0.25,warmup=8`) parsed into a typed
// PolicySpec, with every mistake reported as a PolicyError that says what was expected and found.
// Only the syntax is checked here; whether names fit a model is checked when the policy is created.

import { PolicyError } from '../../util/errors.ts';

/** Which sublayers a similarity-ranked policy may skip, and what its fraction is a fraction of. */
export type SkipUnit = 'ffn' | 'attn' | 'sublayer' | 'block';
export const SKIP_UNITS: readonly SkipUnit[] = ['ffn', 'attn', 'sublayer', 'block'];

export type PolicySpec =
  | { kind: 'dense' }
  /** Skip the sublayers or whole blocks the patterns name (`layers.2-5.ffn`, `layers.7`). */
  | { kind: 'static'; points: string[] }
  /** FFN-SkipLLM: dense for `warmup` tokens, then skip the most saturated FFNs up to `fraction` of FFN FLOPs. */
  | { kind: 'ffn-skip'; fraction: number; warmup: number; keepFirst?: number; keepLast?: number }
  /** Skip the units of lowest block influence (1 − cos(in, out)) on calibration text, up to `fraction` of the unit's FLOPs. */
  | { kind: 'block-influence'; fraction: number; unit: SkipUnit; keepFirst: number; keepLast: number; calibTokens: number }
  /**
   * Stop at the first checked layer whose logit-lens top probability reaches `threshold`: checks come
   * after `minLayer` layers have run, then after every `every` more.
   */
  | { kind: 'early-exit'; threshold: number; minLayer: number; every?: number }
  /** Route every MoE token to `topK` experts. */
  | { kind: 'moe-topk'; topK: number };

export type PolicyKind = PolicySpec['kind'];

export const POLICY_SYNTAX = [
  'dense',
  'static:layers.2-5.ffn,layers.7.attn,layers.9   (sublayers or whole blocks)',
  'ffn-skip:FRACTION[,warmup=K][,keep-first=N][,keep-last=N]',
  'block-influence:FRACTION[,unit=ffn|attn|sublayer|block][,keep-first=N][,keep-last=N][,calib-tokens=N]',
  'early-exit:THRESHOLD[,min-layer=N][,every=N]',
  'moe-topk:K',
];

const HINT = `policy specs look like: ${POLICY_SYNTAX.map((s) => s.split(' ')[0]).join(' | ')}`;

/**
 * Parse one policy spec string.
 * @example
 *   parsePolicy('ffn-skip:0.25,warmup=8') // { kind: 'ffn-skip', fraction: 0.25, warmup: 8 }
 */
export function parsePolicy(text: string): PolicySpec {
  const raw = text.trim();
  const colon = raw.indexOf(':');
  const kind = (colon < 0 ? raw : raw.slice(0, colon)).trim();
  const args = colon < 0 ? [] : raw.slice(colon + 1).split(',').map((s) => s.trim());
  const fail = (msg: string, hint = HINT): never => { throw new PolicyError(raw, msg, hint); };
  if (args.some((a) => a === '')) fail('an empty item between commas');

  const num = (s: string, what: string, ok: (x: number) => boolean, expected: string): number => {
    const x = Number(s);
    if (s === '' || !Number.isFinite(x) || !ok(x)) fail(`${what}: expected ${expected}, found '${s}'`);
    return x;
  };
  const int = (s: string, what: string, min: number) => num(s, what, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
  const fraction = (s: string | undefined) =>
    s === undefined ? fail('missing the fraction, e.g. ffn-skip:0.25') : num(s, 'fraction', (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
  /** key=value options after the first argument; unknown keys are an error. */
  const options = (allowed: string[]): Map<string, string> => {
    const m = new Map<string, string>();
    for (const a of args.slice(1)) {
      const eq = a.indexOf('=');
      const key = eq < 0 ? a : a.slice(0, eq);
      if (eq < 0 || !allowed.includes(key)) fail(`unknown option '${a}'`, `${kind} takes ${allowed.map((k) => `${k}=…`).join(', ')}`);
      m.set(key, a.slice(eq + 1));
    }
    return m;
  };

  switch (kind) {
    case 'dense':
    case 'none':
      if (args.length) fail('dense takes no arguments');
      return { kind: 'dense' };
    case 'static': {
      if (args.length === 0) fail('static needs at least one sublayer or block, e.g. static:layers.2-5.ffn');
      for (const a of args) if (!/^layers\.[^.]+(\.[^.]+)?$/.test(a)) fail(`'${a}' is not a sublayer or block name`, 'name sublayers as layers.N.attn / layers.N-M.ffn, or whole blocks as layers.N');
      return { kind: 'static', points: args };
    }
    case 'ffn-skip': {
      const o = options(['warmup', 'keep-first', 'keep-last']);
      return {
        kind: 'ffn-skip', fraction: fraction(args[0]),
        warmup: o.has('warmup') ? int(o.get('warmup')!, 'warmup', 1) : 8,
        ...(o.has('keep-first') ? { keepFirst: int(o.get('keep-first')!, 'keep-first', 0) } : {}),
        ...(o.has('keep-last') ? { keepLast: int(o.get('keep-last')!, 'keep-last', 0) } : {}),
      };
    }
    case 'block-influence': {
      const o = options(['unit', 'keep-first', 'keep-last', 'calib-tokens']);
      const unit = o.get('unit') ?? 'ffn';
      if (!SKIP_UNITS.includes(unit as SkipUnit)) fail(`unit: expected ${SKIP_UNITS.join(' | ')}, found '${unit}'`);
      return {
        kind: 'block-influence', fraction: fraction(args[0]), unit: unit as SkipUnit,
        keepFirst: o.has('keep-first') ? int(o.get('keep-first')!, 'keep-first', 0) : 0,
        keepLast: o.has('keep-last') ? int(o.get('keep-last')!, 'keep-last', 0) : 0,
        calibTokens: o.has('calib-tokens') ? int(o.get('calib-tokens')!, 'calib-tokens', 2) : 4096,
      };
    }
    case 'early-exit': {
      const o = options(['min-layer', 'every']);
      if (args[0] === undefined) fail('missing the confidence threshold, e.g. early-exit:0.9');
      const every = o.has('every') ? int(o.get('every')!, 'every', 1) : 1;
      return {
        kind: 'early-exit',
        threshold: num(args[0], 'threshold', (x) => x > 0 && x <= 1, 'a probability in (0, 1]'),
        minLayer: o.has('min-layer') ? int(o.get('min-layer')!, 'min-layer', 1) : 1,
        ...(every > 1 ? { every } : {}),
      };
    }
    case 'moe-topk':
      if (args.length !== 1) fail('moe-topk takes one number, e.g. moe-topk:1');
      return { kind: 'moe-topk', topK: int(args[0], 'top-k', 1) };
    default:
      return fail(`unknown policy '${kind}'`);
  }
}

/** The canonical string of a spec (parsePolicy(formatPolicy(s)) equals s). */
export function formatPolicy(s: PolicySpec): string {
  switch (s.kind) {
    case 'dense': return 'dense';
    case 'static': return `static:${s.points.join(',')}`;
    case 'ffn-skip': return `ffn-skip:${s.fraction},warmup=${s.warmup}${s.keepFirst !== undefined ? `,keep-first=${s.keepFirst}` : ''}${s.keepLast !== undefined ? `,keep-last=${s.keepLast}` : ''}`;
    case 'block-influence': return `block-influence:${s.fraction},unit=${s.unit},keep-first=${s.keepFirst},keep-last=${s.keepLast},calib-tokens=${s.calibTokens}`;
    case 'early-exit': return `early-exit:${s.threshold},min-layer=${s.minLayer}${s.every && s.every > 1 ? `,every=${s.every}` : ''}`;
    case 'moe-topk': return `moe-topk:${s.topK}`;
  }
}
