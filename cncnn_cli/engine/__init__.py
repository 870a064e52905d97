"""Training glue around mmengine's Runner: data, hooks, safe resume, AMP on CPU, DDP."""
