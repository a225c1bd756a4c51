// What the form knows about each method: its name and one-line description, its options, and budgets.
import type { Method } from "./api";

export const METHOD_LABELS: Record<Method, [string, string]> = {
  smt: ["SMT", "sparse matrix tuning: trains the most-changed blocks of the chosen projections"],
  snell: ["SNELL", "sparse tuning with a kernelised low-rank update and a sparsity rule"],
  lora: ["LoRA", "low-rank adapters (PEFT)"],
  dora: ["DoRA", "weight-decomposed low-rank adapters (PEFT)"],
  full: ["Full fine-tuning", "every weight trains; the budget is ignored"],
};

export interface OptionField { key: string; label: string; kind: "int" | "float" | "bool" | string[]; placeholder: string }
export const OPTIONS: Record<Method, OptionField[]> = {
  smt: [
    { key: "block_size", label: "Block size", kind: "int", placeholder: "largest power of two ≤ 256 dividing the sides" },
    { key: "selection_steps", label: "Selection steps", kind: "int", placeholder: "100, or one epoch if shorter" },
    { key: "score", label: "Block score", kind: ["mean_abs_sum", "abs_mean", "l1", "l2"], placeholder: "mean_abs_sum" },
    { key: "pools", label: "Block pools", kind: ["global", "attention_mlp"], placeholder: "global" },
    { key: "head_steps", label: "Head warm-up steps", kind: "int", placeholder: "20 (a new classification head only)" },
  ],
  snell: [
    { key: "sparsity", label: "Sparsity", kind: "float", placeholder: "0.9" },
    { key: "rule", label: "Sparsity rule", kind: ["released", "paper"], placeholder: "released" },
    { key: "learn_coefficients", label: "Learn coefficients", kind: "bool", placeholder: "false" },
  ],
  lora: [
    { key: "alpha", label: "Alpha", kind: "float", placeholder: "2 × rank" },
    { key: "dropout", label: "Dropout", kind: "float", placeholder: "0" },
  ],
  dora: [
    { key: "alpha", label: "Alpha", kind: "float", placeholder: "2 × rank" },
    { key: "dropout", label: "Dropout", kind: "float", placeholder: "0" },
  ],
  full: [],
};

/** "0.01", "1%", "4096" or "1e6" → a fraction or a count; null when it is not a valid budget. */
export function parseBudget(text: string): number | null {
  const t = text.trim().replace(/_/g, "");
  if (!t) return null;
  const pct = t.endsWith("%");
  const v = Number(pct ? t.slice(0, -1) : t);
  if (!Number.isFinite(v) || v <= 0) return null;
  if (pct) return v < 100 ? v / 100 : null;
  if (v < 1) return v;
  return Number.isInteger(v) ? v : null;
}
