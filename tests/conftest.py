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


def _write_preset(directory, text: str) -> str:
    """Writes a scenario TOML named after its `name` key; returns its path."""
    name = text.split('name = "', 1)[1].split('"', 1)[0]
    path = directory / f"{name}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def tiny_lbf(tmp_path):
    return _write_preset(tmp_path, TINY_LBF)

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
    return _write_preset(tmp_path, TINY_RIDEHAILING)


# CI runs the same examples every time: a property test fails on the code, not on the draw.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True)
settings.load_profile("deterministic")
