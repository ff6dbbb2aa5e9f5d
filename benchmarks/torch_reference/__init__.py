"""The PyTorch reference of jaxseg's models (models.py), its train and inference steps
as the framework comparisons run them (steps.py), and jaxseg's weights copied into it to
check that both compute the same function (flax_weights.py). Needs the bench extra
(`pip install -e '.[bench]'`)."""
