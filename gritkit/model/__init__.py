"""GritLM and what it is made of: its saved settings, prompt formats, pooling, packing, compact tokens, quantised vectors, sampling and sentence-transformers export."""
