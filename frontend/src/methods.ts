// How methods and their options read on screen. What a method is — its options, their types, defaults and
// bounds, whether it takes a budget — comes from GET /v1/methods (the engine's registry), never from here:
// no view compares a method's name, so a new method needs no dashboard change (tests/test_api_types.py).
import { api, type MethodInfo, type MethodOption } from "./api";
import { budget } from "./format";
import { useLoad, type Loaded } from "./hooks";

let listed: Promise<MethodInfo[]> | null = null;

/** The service's methods, asked once per page load (they change only with the server's code); a failure is
 * not kept, so the next view asks again. */
export function loadMethods(): Promise<MethodInfo[]> {
  listed ??= api.methods().then((page) => page.data, (e) => { listed = null; throw e; });
  return listed;
}

export function useMethods(): Loaded<MethodInfo[]> {
  return useLoad(loadMethods, []);
}

/** The method the others are measured against: the first that takes no budget (full fine-tuning trains every
 * weight, so it has none). */
export function referenceMethod(methods: MethodInfo[]): MethodInfo | undefined {
  return methods.find((m) => !m.uses_budget);
}

/** Whether a method takes a budget; undefined while the list loads or for a method the service no longer offers. */
export function takesBudget(methods: MethodInfo[] | null, id: string): boolean | undefined {
  return methods?.find((m) => m.id === id)?.uses_budget;
}

/** A job's budget in words, "not used" for a method that takes none. */
export function jobBudget(job: { budget: number | null; method: string }, methods: MethodInfo[] | null): string {
  return budget(job.budget, takesBudget(methods, job.method));
}

const METHOD_LABELS: Record<string, [string, string]> = {
  smt: ["SMT", "sparse matrix tuning: trains the most-changed blocks of the chosen projections"],
  snell: ["SNELL", "sparse tuning with a kernelised low-rank update and a sparsity rule"],
  lora: ["LoRA", "low-rank adapters (PEFT)"],
  dora: ["DoRA", "weight-decomposed low-rank adapters (PEFT)"],
  full: ["Full fine-tuning", "every weight trains; the budget is ignored"],
};

const OPTION_LABELS: Record<string, string> = {
  block_size: "Block size", selection_steps: "Selection steps", score: "Block score", pools: "Block pools",
  head_steps: "Head warm-up steps", learn_coefficients: "Learn coefficients", rule: "Sparsity rule",
};

const words = (name: string) => name.charAt(0).toUpperCase() + name.slice(1).replace(/_/g, " ");

/** A method's display name and one-line description (a method the dashboard has no words for: its id). */
export function methodLabel(id: string): [string, string] {
  return METHOD_LABELS[id] ?? [id.toUpperCase(), ""];
}

export function optionLabel(name: string): string {
  return OPTION_LABELS[name] ?? words(name);
}

/** What an empty field means: the default, or that the method computes it. */
export function optionPlaceholder(opt: MethodOption): string {
  return opt.default === null || opt.default === undefined ? "the method's default" : String(opt.default);
}

/** The form's option strings for a method as the typed JSON a job (and an estimate) takes; empty ones left out. */
export function typedOptions(method: MethodInfo | undefined, values: Record<string, string>): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const opt of method?.options ?? []) {
    const v = (values[`${method!.id}.${opt.name}`] ?? "").trim();
    if (!v) continue;
    options[opt.name] = opt.type === "integer" || opt.type === "number" ? Number(v) : opt.type === "boolean" ? v === "true" : v;
  }
  return options;
}

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
