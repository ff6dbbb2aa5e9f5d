"""jaxseg's benchmarks. Each script runs from the repository root as
`python benchmarks/NAME.py` (or `python -m benchmarks.NAME`) and prints its table
(BENCHMARKS.md records them). The modules that scripts share run nothing of their own:
timing (the one clock), report, cases, peaks, jax_model, unet_passes, brats_files,
training_stream, comparison_table and torch_reference/. No script imports another, and
none is named as a module of jaxseg.
"""
