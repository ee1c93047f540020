"""Several processes and threads: torchrun set-up and collectives, sharded corpus embedding, the CPU thread count."""
