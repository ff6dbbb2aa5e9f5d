"""jaxseg: brain-tumour segmentation in JAX/Flax, a U-Net and an LSTM-U-Net whose
refinement loop feeds its prediction back.

train.py and eval.py parse flags and call `training.train_and_evaluate` and
`eval_workdir.evaluate_workdir`; README.md's Layout section lists every module and the
config keys each one reads.
"""
