"""What a model is to us: resolving what the user typed, loading it safely (folders, hub ids, GGUF files, LoRA
adapters), chat formatting and the unit map. The named models live in ssah_audit.zoo."""
