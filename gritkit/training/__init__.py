"""GRIT training: the config, the loop, its steps and losses, data reading, doc-cache data and checkpoints."""
