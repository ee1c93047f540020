"""Where a model's weights come from: a name or path turned into a model directory (shipped models, GGUF bases, shipped adapters); never imports GritLM."""
