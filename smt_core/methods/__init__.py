"""Fine-tuning methods, one package each; every package registers itself with smt_core.registry."""
