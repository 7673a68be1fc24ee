"""Shared fixtures: a tiny LBF scenario so training tests compile and run in seconds."""

import pytest

TINY_LBF = """
name = "lbf-tiny"
[env]
kind = "lbf"
field_size = 6
num_agents = 4
num_food = 2
sight = 6
max_steps = 10
[train]
batch_size = 16
"""


@pytest.fixture
def tiny_lbf(tmp_path):
    path = tmp_path / "lbf-tiny.toml"
    path.write_text(TINY_LBF)
    return str(path)

# CI runs the same examples every time: a property test fails on the code, not on the draw.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")
