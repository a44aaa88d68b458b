// `brickwork inspect`: what a model is made of, read from its config/spec alone (no weights are
// loaded, so it is instant even for large checkpoints): a header, one row per brick with its shape,
// parameters and FLOPs per token, and totals. Attention FLOPs depend on the context length (--ctx).

import { Command } from 'commander';
import { brickCosts, placementOf, readModelSource, sublayerNames, UsageError, type BrickCost, type ModelSource, type ModelSpec, type SublayerSpec } from '../index.ts';
import { displayPath, intArg, modelOption } from './common.ts';
import { fmtCompact, fmtFixed, fmtInt, keyValues, table, type Row } from './format.ts';

/** The compact shape of one sublayer: `H=8 K=2 D=32 rope`, `F=688 gated silu`, `E=4 top2 F=384 gated silu`. */
export function shapeOf(sub: SublayerSpec): string {
  const act = (s: { gated: boolean; activation: string }) => (s.gated ? `gated ${s.activation}` : s.activation);
  switch (sub.kind) {
    case 'attn':
      return [`H=${sub.heads} K=${sub.kvHeads} D=${sub.headDim}`, sub.rope && 'rope', (sub.qkvBias || sub.outBias) && 'bias', sub.qkNorm && `${sub.qkNorm}-norm`].filter(Boolean).join(' ');
    case 'ffn':
      return [`F=${sub.hidden}`, act(sub), sub.bias && 'bias', sub.rank && `rank ${sub.rank}`, sub.blocks && `${sub.blocks} blocks`,
        sub.nested && `nested ${sub.nested.join('/')}`].filter(Boolean).join(' ');
    case 'moe':
      return [`E=${sub.experts} top${sub.topK} F=${sub.hidden}`, act(sub), sub.bias && 'bias'].filter(Boolean).join(' ');
  }
}

/** Shape text of any brick row of brickCosts (embed, layers.i.<sub>, head). */
function brickShape(spec: ModelSpec, cost: BrickCost): string {
  if (cost.name === 'embed') return `V=${spec.vocabSize} C=${spec.dModel}${spec.learnedPositions ? ` +pos ${spec.maxContext}` : ''}`;
  if (cost.name === 'head') return [spec.finalNorm && 'norm', `V=${spec.vocabSize} C=${spec.dModel}`, spec.tiedEmbeddings && 'tied'].filter(Boolean).join(' ');
  const m = /^layers\.(\d+)\.(.+)$/.exec(cost.name);
  const layer = m ? spec.layers[Number(m[1])] : undefined;
  if (!m || !layer) return '';
  const sub = layer.sublayers[sublayerNames(layer).indexOf(m[2])];
  if (!sub) return '';
  // Only say what departs from the usual serial pre-norm layer, so the common case stays short.
  const placement = placementOf(layer, sub);
  const notes = [layer.wiring === 'parallel' && 'parallel', placement !== 'pre' && `${placement}-norm`, layer.normScale !== undefined && `norm x${fmtFixed(layer.normScale, 3)}`].filter(Boolean);
  return [shapeOf(sub), ...notes].join(' ');
}

function positions(spec: ModelSpec): string {
  const parts: string[] = [];
  if (spec.rope) {
    const s = spec.rope.scaling;
    parts.push(`rope (theta ${fmtInt(spec.rope.theta)}${spec.rope.dim ? `, ${spec.rope.dim} dims` : ''}${s ? `, ${s.type} scaling x${s.factor}` : ''})`);
  }
  if (spec.learnedPositions) parts.push(`learned (${fmtInt(spec.maxContext)})`);
  return parts.join(' + ') || 'none';
}

function normSummary(spec: ModelSpec): string {
  const placements = [...new Set(spec.layers.flatMap((l) => l.sublayers.map((sub) => placementOf(l, sub))))];
  const where = placements.length === 1 ? `${placements[0]}-norm` : `mixed placement (${placements.join(', ')})`;
  return `${spec.norm.kind} (eps ${spec.norm.eps < 1e-3 ? spec.norm.eps.toExponential() : spec.norm.eps}${spec.norm.kind === 'layernorm' ? `, ${spec.norm.bias ? 'with' : 'no'} bias` : ''}), ${where}${spec.finalNorm ? ', final norm' : ''}`;
}

export interface InspectData {
  spec: ModelSpec;
  bricks: BrickCost[];
  totals: { params: number; flopsPerToken: number; ctx: number };
}

export function inspectData(spec: ModelSpec, ctx: number): InspectData {
  const bricks = brickCosts(spec, ctx);
  const params = bricks.reduce((s, b) => s + b.params, 0);
  const flopsPerToken = bricks.reduce((s, b) => s + b.flopsPerToken, 0);
  return { spec, bricks, totals: { params, flopsPerToken, ctx } };
}

/** The human-readable report: header, brick table, totals. */
export function inspectReport(source: ModelSource, ctx: number, label = displayPath(source.dir)): string {
  const { spec, bricks, totals } = inspectData(source.spec, ctx);
  const header = keyValues([
    ['model', label],
    ['format', source.kind === 'hf' ? `Hugging Face folder (model_type ${source.modelType})` : 'native Brickwork checkpoint'],
    ['family', spec.family ?? '(none)'],
    ['layers', fmtInt(spec.layers.length)],
    ['vocab', fmtInt(spec.vocabSize)],
    ['width', fmtInt(spec.dModel)],
    ['context', fmtInt(spec.maxContext)],
    ['norm', normSummary(spec)],
    ['positions', positions(spec)],
    ['tied embeddings', spec.tiedEmbeddings ? 'yes' : 'no'],
  ]);
  const mflops = (f: number) => fmtFixed(f / 1e6, 3);
  const rows: Row[] = bricks.map((b) => [b.name, b.kind, brickShape(spec, b), fmtInt(b.params), mflops(b.flopsPerToken)]);
  rows.push('rule', ['total', '', '', fmtInt(totals.params), mflops(totals.flopsPerToken)]);
  const body = table([
    { header: 'brick' }, { header: 'kind' }, { header: 'shape' },
    { header: 'params', align: 'right' }, { header: 'MFLOPs/token', align: 'right' },
  ], rows);
  const foot = keyValues([
    ['params', `${fmtInt(totals.params)} (${fmtCompact(totals.params)})`],
    ['FLOPs per token', `${fmtInt(totals.flopsPerToken)} (${fmtCompact(totals.flopsPerToken)}) at context ${fmtInt(ctx)}`],
  ]);
  return `${header}\n\nbricks (attention FLOPs counted at a context of ${fmtInt(ctx)} tokens; change with --ctx)\n${body}\n\n${foot}\n`;
}

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('show a model\'s bricks, shapes, parameters and FLOPs (reads the config only, no weights)')
    .addOption(modelOption())
    .option('--ctx <n>', "context length at which attention FLOPs are counted (default: 256, or the model's context if shorter)", intArg(1))
    .option('--json', 'print { spec, bricks, totals } as JSON')
    .action((f: { model: string; ctx?: number; json?: boolean }) => {
      const source = readModelSource(f.model);
      f.ctx ??= Math.min(256, source.spec.maxContext);
      if (f.ctx > source.spec.maxContext)
        throw new UsageError(`--ctx ${f.ctx} exceeds the model's context of ${source.spec.maxContext} tokens`, `use --ctx ${source.spec.maxContext} or less`);
      process.stdout.write(f.json ? JSON.stringify(inspectData(source.spec, f.ctx), null, 2) + '\n' : inspectReport(source, f.ctx, displayPath(f.model)));
    });
}
