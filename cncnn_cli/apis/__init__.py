"""Entry points for applications and the Python API: inference (`Predictor`), ablation, benchmark."""
