"""Inference: a series to the 14 RSNA probabilities, heatmap and candidates (`predictor`), and
the evaluation of a run on held-out or test series (`evaluate`)."""
