"""Zero-shot tasks: builders of (x_init, ctx, S, cond)."""
