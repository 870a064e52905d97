"""Training: one run in a work dir on mmengine's Runner — hooks, safe resume, seeded sampling, AMP, DDP, SyncBN, the work-dir lock."""
