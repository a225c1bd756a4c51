// Hand-drawn SVG charts (no chart library, nothing fetched): lines over steps, and labelled points.
import { num } from "../format";

export interface Series { label: string; color: string; points: [number, number][]; dashed?: boolean }

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];

function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/** Ticks on a log10 axis (x0, x1 are exponents): decades, or 1-2-5 steps when the range is narrow. */
function logTicks(x0: number, x1: number): number[] {
  for (const mults of [[1], [1, 2, 5], [1, 1.5, 2, 3, 5, 7]]) {
    const out: number[] = [];
    for (let d = Math.floor(x0); d <= Math.ceil(x1); d++)
      for (const m of mults) { const v = m * 10 ** d; if (Math.log10(v) >= x0 && Math.log10(v) <= x1) out.push(v); }
    if (out.length >= 2) return out;
  }
  return [10 ** x0, 10 ** ((x0 + x1) / 2), 10 ** x1].map((v) => +v.toPrecision(2));
}

interface ChartProps {
  title: string; series: Series[]; xLabel: string; yLabel?: string; logX?: boolean; mode?: "lines" | "points";
  empty: string; yFormat?: (v: number) => string; xFormat?: (v: number) => string; height?: number;
  xDomain?: [number, number];  // at least this x range (e.g. every step of the run), so charts line up
}

export function Chart({ title, series, xLabel, yLabel, logX, mode = "lines", empty, yFormat = num, xFormat = num, height = 220, xDomain }: ChartProps) {
  const W = 520, H = height, L = 56, R = 12, T = 12, B = 40;
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0));
  const fx = (x: number) => (logX ? Math.log10(x) : x);
  const titleId = `chart-${title.replace(/\W+/g, "-").toLowerCase()}`;
  if (!all.length) {
    return (
      <figure class="chart" aria-labelledby={titleId}>
        <figcaption id={titleId}>{title}</figcaption>
        <p class="chart-empty">{empty}</p>
      </figure>
    );
  }
  let [x0, x1] = [Math.min(...all.map((p) => fx(p[0]))), Math.max(...all.map((p) => fx(p[0])))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (xDomain && !logX) { x0 = Math.min(x0, xDomain[0]); x1 = Math.max(x1, xDomain[1]); }
  if (x0 === x1) { x0 -= logX ? 0.5 : 1; x1 += logX ? 0.5 : 1; }
  else { const px = (x1 - x0) * (logX ? 0.08 : 0.03); x0 -= px; x1 += px; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.06;
  y0 -= pad; y1 += pad;
  const sx = (x: number) => L + ((fx(x) - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const intX = xLabel === "step";  // steps are whole numbers
  const xt = logX ? logTicks(x0, x1) : ticks(x0, x1, 6).filter((v) => !intX || Number.isInteger(v));
  const yt = ticks(y0, y1, 4);
  return (
    <figure class="chart" aria-labelledby={titleId}>
      <figcaption id={titleId}>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}: ${series.map((s) => `${s.label}, ${s.points.length} points`).join("; ")}`}>
        {yt.map((v) => (
          <g key={`y${v}`}>
            <line x1={L} x2={W - R} y1={sy(v)} y2={sy(v)} class="grid" />
            <text x={L - 6} y={sy(v) + 4} text-anchor="end" class="tick">{yFormat(v)}</text>
          </g>
        ))}
        {xt.map((v) => (
          <text key={`x${v}`} x={sx(v)} y={H - B + 16} text-anchor="middle" class="tick">{xFormat(v)}</text>
        ))}
        <line x1={L} x2={W - R} y1={H - B} y2={H - B} class="axis" />
        <line x1={L} x2={L} y1={T} y2={H - B} class="axis" />
        <text x={(L + W - R) / 2} y={H - 6} text-anchor="middle" class="axis-label">{xLabel}</text>
        {yLabel && <text transform={`translate(12 ${(T + H - B) / 2}) rotate(-90)`} text-anchor="middle" class="axis-label">{yLabel}</text>}
        {series.map((s) => {
          const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0));
          if (mode === "points" || pts.length === 1)
            return pts.map(([x, y]) => <circle cx={sx(x)} cy={sy(y)} r={mode === "points" ? 5 : 3} fill={s.color}><title>{`${s.label}: ${xFormat(x)}, ${yFormat(y)}`}</title></circle>);
          const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
          return <path d={d} fill="none" stroke={s.color} stroke-width={2} stroke-dasharray={s.dashed ? "5 4" : undefined}><title>{s.label}</title></path>;
        })}
      </svg>
      {series.length > 1 || mode === "points" ? (
        <ul class="legend">
          {series.map((s) => <li><span class={`swatch${s.dashed ? " dashed" : ""}`} style={{ background: s.dashed ? undefined : s.color, borderColor: s.color }} />{s.label}</li>)}
        </ul>
      ) : null}
    </figure>
  );
}
