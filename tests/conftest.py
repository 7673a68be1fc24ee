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

TINY_RIDEHAILING = """
name = "ridehailing-tiny"
[env]
kind = "ridehailing"
rows = 3
cols = 3
city = ""
base_low = 2
base_high = 6
max_duration = 2
horizon = 12
drivers_per_cell = 3
max_candidates = 8
[train]
batch_size = 16
"""


@pytest.fixture
def tiny_ridehailing(tmp_path):
    path = tmp_path / "ridehailing-tiny.toml"
    path.write_text(TINY_RIDEHAILING)
    return str(path)


# CI runs the same examples every time: a property test fails on the code, not on the draw.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")
