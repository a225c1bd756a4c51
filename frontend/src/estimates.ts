// Every offered method's estimate for the new-job form's inputs, refreshed (debounced) as they change.
import { useEffect, useState } from "preact/hooks";
import { api, type Estimate, type MethodInfo } from "./api";

export interface EstimateInputs {
  model: string; budget: number | null; targets: string[]; batchSize: string; maxSeqLen: string;
  dataset: string; checkpointing: boolean; method: string; options: Record<string, unknown>;
  accumulation: string;  // micro-batches per optimizer step: the memory stays one batch_size batch's
}

/** The chosen method's row uses the options set in the form; the others use their defaults. */
export function useEstimates(methods: MethodInfo[], inputs: EstimateInputs) {
  const [estimates, setEstimates] = useState<Record<string, Estimate>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const key = JSON.stringify([methods.map((m) => m.id), inputs]);
  useEffect(() => {
    const { model, budget, targets } = inputs;
    if (!model || budget === null || targets.length === 0 || methods.length === 0) return;
    let live = true;
    const t = setTimeout(async () => {
      const results = await Promise.all(methods.map(async ({ id }) => {
        try {
          const p: Record<string, string | number> = {
            method: id, budget, batch_size: Number(inputs.batchSize) || 8, max_seq_len: Number(inputs.maxSeqLen) || 256,
            targets: targets.join(","),
          };
          if (inputs.dataset) p.training_dataset = inputs.dataset;  // activations sized by the rows' token lengths
          if (inputs.checkpointing) p.gradient_checkpointing = "true";
          if (Number(inputs.accumulation) > 1) p.gradient_accumulation_steps = Number(inputs.accumulation);
          const own = id === inputs.method ? inputs.options : {};
          if (Object.keys(own).length) p.method_options = JSON.stringify(own);  // e.g. SMT's block_size changes the count
          return [id, await api.estimate(model, p), null] as const;
        } catch (e) {
          return [id, null, (e as Error).message] as const;
        }
      }));
      if (!live) return;
      const est: Record<string, Estimate> = {};
      const errs: Record<string, string> = {};
      for (const [id, e, err] of results) { if (e) est[id] = e; if (err) errs[id] = err; }
      setEstimates(est);
      setErrors(errs);
    }, 250);
    return () => { live = false; clearTimeout(t); };
  }, [key]);
  return { estimates, errors };
}
