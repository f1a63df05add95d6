"""Networks, meta-training (RMA, Kumar et al. 2021), priors, online estimators, ONNX export, evaluation."""
