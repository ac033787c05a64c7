"""Training recipes (resumable, CPU-first, GPU when available)."""
