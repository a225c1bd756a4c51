// SMT's chosen blocks: layers × projections, each weight matrix drawn at its true (out, in) shape as its grid
// of blocks, the chosen blocks coloured by score, so one sees at a glance where the budget went.
import type { BlockModule, Blocks } from "../api";
import { count, num, percent } from "../format";

const ORDER = ["q", "k", "v", "o", "gate", "up", "down"];
// the largest matrix side across the model, in pixels (smaller for deep models so more layers fit in view);
// every matrix shares the one scale, so shapes compare truly
const maxPx = (layers: number) => Math.max(56, Math.min(132, Math.floor(1400 / Math.max(1, layers))));

// viridis, sampled: low scores dark blue, high scores yellow
const STOPS = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];
function colour(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const a = STOPS[i].match(/\w\w/g)!.map((h) => parseInt(h, 16));
  const b = STOPS[i + 1].match(/\w\w/g)!.map((h) => parseInt(h, 16));
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")})`;
}

function Matrix({ m, bs, scale, lo, hi }: { m: BlockModule; bs: number; scale: number; lo: number; hi: number }) {
  const w = Math.max(2, m.cols * scale);
  const h = Math.max(2, m.rows * scale);
  const cell = bs * scale;
  const lines = [];
  if (cell >= 4) {  // the block grid, when blocks are big enough to see
    for (let r = bs; r < m.rows; r += bs) lines.push(<line x1={0} x2={w} y1={r * scale} y2={r * scale} />);
    for (let c = bs; c < m.cols; c += bs) lines.push(<line x1={c * scale} x2={c * scale} y1={0} y2={h} />);
  }
  const params = m.blocks.reduce((s, b) => s + b.height * b.width, 0);
  return (
    <svg class="matrix" width={w} height={h} viewBox={`0 0 ${w} ${h}`} data-module={m.name} data-target={m.target} data-rows={m.rows}
         data-cols={m.cols} role="img"
         aria-label={`${m.name}: ${m.rows}×${m.cols}, ${m.blocks.length} of ${Math.ceil(m.rows / bs) * Math.ceil(m.cols / bs)} blocks chosen`}>
      <title>{`${m.name} (${m.rows}×${m.cols}): ${m.blocks.length} blocks, ${count(params)} params`}</title>
      <rect class="matrix-bg" x={0} y={0} width={w} height={h} />
      <g class="block-grid">{lines}</g>
      {m.blocks.map((b) => {
        const r0 = (b as any).row0 ?? b.row * bs;
        const c0 = (b as any).col0 ?? b.col * bs;
        return (
          <rect class="block" x={c0 * scale} y={r0 * scale} width={Math.max(1, b.width * scale)} height={Math.max(1, b.height * scale)}
                fill={colour(hi > lo ? (b.score - lo) / (hi - lo) : 1)} data-module={m.name} data-target={m.target} data-row={b.row} data-col={b.col}
                data-score={b.score}>
            <title>{`layer ${m.layer} ${m.target}: block row ${b.row}, col ${b.col} (${b.height}×${b.width}), score ${num(b.score)}`}</title>
          </rect>
        );
      })}
    </svg>
  );
}

export function Heatmap({ blocks }: { blocks: Blocks }) {
  const mods = blocks.modules;
  const bs = blocks.block_size;
  const targets = ORDER.filter((t) => mods.some((m) => m.target === t)).concat(
    [...new Set(mods.map((m) => m.target))].filter((t) => !ORDER.includes(t)));
  const layers = [...new Set(mods.map((m) => m.layer))].sort((a, b) => a - b);
  const maxSide = Math.max(1, ...mods.map((m) => Math.max(m.rows, m.cols)));
  const scale = maxPx(layers.length) / maxSide;
  const scores = mods.flatMap((m) => m.blocks.map((b) => b.score));
  const lo = scores.length ? Math.min(...scores) : 0;
  const hi = scores.length ? Math.max(...scores) : 1;
  const total = mods.reduce((s, m) => s + m.blocks.reduce((t, b) => t + b.height * b.width, 0), 0);
  const byTarget = targets.map((t) => {
    const ms = mods.filter((m) => m.target === t);
    const p = ms.reduce((s, m) => s + m.blocks.reduce((u, b) => u + b.height * b.width, 0), 0);
    return { t, blocks: ms.reduce((s, m) => s + m.blocks.length, 0), params: p };
  });
  const nBlocks = scores.length;

  return (
    <div class="heatmap" data-blocks-count={nBlocks} data-block-size={bs}>
      <p>
        {nBlocks} blocks of {bs}×{bs} chosen in {mods.filter((m) => m.blocks.length).length} of {mods.length} matrices,{" "}
        {count(total)} trainable parameters. Matrices are drawn at their true shape (rows = outputs, columns = inputs), on one scale.
      </p>
      <table class="budget-split" aria-label="Where the budget went, by projection">
        <thead><tr><th scope="col">Projection</th><th scope="col" class="num">Blocks</th><th scope="col" class="num">Parameters</th><th scope="col">Share of the budget</th></tr></thead>
        <tbody>
          {byTarget.map(({ t, blocks: n, params }) => (
            <tr data-target={t}>
              <th scope="row">{t}</th><td class="num">{n}</td><td class="num">{count(params)}</td>
              <td><span class="share"><span style={{ width: `${total ? (params / total) * 100 : 0}%` }} /></span> {percent(total ? params / total : 0, 0)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <div class="heatmap-scroll">
        <table class="heatmap-grid" aria-label="Chosen blocks by layer and projection">
          <thead><tr><th scope="col">Layer</th>{targets.map((t) => <th scope="col">{t}</th>)}</tr></thead>
          <tbody>
            {layers.map((l) => (
              <tr data-layer={l}>
                <th scope="row">{l}<div class="layer-count">{mods.filter((m) => m.layer === l).reduce((n, m) => n + m.blocks.length, 0)} blocks</div></th>
                {targets.map((t) => {
                  const ms = mods.filter((m) => m.layer === l && m.target === t);
                  return <td>{ms.map((m) => <Matrix m={m} bs={bs} scale={scale} lo={lo} hi={hi} />)}</td>;
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div class="scale" aria-label="Colour scale of block scores">
        <span>score {num(lo)}</span>
        <span class="gradient" style={{ background: `linear-gradient(to right, ${STOPS.join(",")})` }} />
        <span>{num(hi)}</span>
        <span class="swatch-unchosen" /> <span>not chosen</span>
      </div>
    </div>
  );
}
