"""jaxseg: brain-tumour segmentation in JAX/Flax, a U-Net and an LSTM-U-Net whose
refinement loop feeds its prediction back.

train.py, eval.py and experiment.py parse flags and call
`training.train_and_evaluate`, `eval_workdir.evaluate_workdir` and `experiments`;
`cli` turns what the user handed over into one-line errors (`errors`). README.md's
Layout section lists every module and the config keys each one reads.
"""
