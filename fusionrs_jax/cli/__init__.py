"""Layer 6: command-line entry points (main, evaluate, aot)."""
