"""Built-in dataset plugins: each module registers itself in the datasets registry."""
