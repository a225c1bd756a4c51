// What a selecting method (SMT) chose, as numbers: `metrics.selection` (README, "What is reported") — the share
// of the chosen parameters per target (the SMT paper's observation: V dominates) and per layer. Shown in the job
// summary and, one row per job, in the compare view. Drawn only when a job's metrics carry it, never by method name.
import { PALETTE } from "./Chart";
import { count, percent } from "../format";

export type Share = { blocks: number; params: number; share: number };
export type Selection = { by_target: Record<string, Share>; by_layer: (Share & { layer: number; by_target: Record<string, Share> })[] };

/** The job's `metrics.selection`, or null when it has none (other methods, older jobs). */
export function selectionOf(metrics: Record<string, unknown> | null | undefined): Selection | null {
  const sel = metrics?.selection as Selection | undefined;
  return sel && typeof sel === "object" && sel.by_target && Array.isArray(sel.by_layer) ? sel : null;
}

/** One colour per target, stable across jobs (the order targets are first seen in). */
export function targetColour(targets: string[], t: string): string {
  return PALETTE[Math.max(0, targets.indexOf(t)) % PALETTE.length];
}

/** A bar of the shares, one segment per target, each with its share as a tooltip. */
export function ShareBar({ shares, targets }: { shares: Record<string, Share>; targets: string[] }) {
  return (
    <span class="share-bar" role="img" aria-label={targets.map((t) => `${t} ${percent(shares[t]?.share ?? 0)}`).join(", ")}>
      {targets.filter((t) => (shares[t]?.share ?? 0) > 0).map((t) => (
        <span class="share-seg" title={`${t}: ${percent(shares[t].share)}`} style={{ width: `${shares[t].share * 100}%`, background: targetColour(targets, t) }} />
      ))}
    </span>
  );
}

export function SelectionSummary({ selection }: { selection: Selection }) {
  const targets = Object.keys(selection.by_target);
  return (
    <section aria-labelledby="selection-title" class="card selection">
      <h2 id="selection-title">What it chose</h2>
      <table class="compare" aria-label="Chosen parameters by target">
        <thead><tr><th scope="col">Target</th><th scope="col" class="num">Blocks</th><th scope="col" class="num">Parameters</th><th scope="col" class="num">Share</th><th scope="col">Share of the chosen</th></tr></thead>
        <tbody>
          {targets.map((t) => {
            const s = selection.by_target[t];
            return (
              <tr data-target={t} data-share={s.share} data-params={s.params}>
                <th scope="row"><span class="swatch" style={{ background: targetColour(targets, t) }} /> {t}</th>
                <td class="num">{count(s.blocks)}</td><td class="num">{count(s.params)}</td><td class="num">{percent(s.share)}</td>
                <td><span class="share-bar"><span class="share-seg" style={{ width: `${s.share * 100}%`, background: targetColour(targets, t) }} /></span></td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <table class="compare" aria-label="Chosen parameters by layer">
        <thead><tr><th scope="col">Layer</th><th scope="col" class="num">Blocks</th><th scope="col" class="num">Share</th><th scope="col">By target, within the layer</th></tr></thead>
        <tbody>
          {selection.by_layer.map((row) => (
            <tr data-layer={row.layer} data-share={row.share}>
              <th scope="row">{row.layer}</th><td class="num">{count(row.blocks)}</td><td class="num">{percent(row.share)}</td>
              <td><ShareBar shares={row.by_target} targets={targets} /></td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
