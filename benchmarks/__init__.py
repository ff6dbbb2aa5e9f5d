"""jaxseg's benchmarks. Each script runs from the repository root as
`python benchmarks/NAME.py` (or `python -m benchmarks.NAME`) and prints its table
(BENCHMARKS.md records them); the modules that scripts share (timing, report, cases,
unet_passes, jax_model, torch_reference) run nothing of their own, and no script
imports another.
"""
