"""Every picture: Figure 3, training curves, confusion matrices (headless matplotlib)."""
