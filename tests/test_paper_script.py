"""experiments/paper.py on a tiny budget: the table files, missing rows, the marl-eval layout."""

import csv
import json
import sys
from pathlib import Path

import pytest
from conftest import TINY_LBF, _write_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import paper  # noqa: E402


def test_paper_tables_list_every_method_and_the_papers_numbers():
    for table in paper.TABLES.values():
        for row in table.rows:
            assert len(row.paper) == len(table.columns), (table.number, row.label)
    assert [r.label for r in paper.TABLES["2"].rows] == ["NoPS", "PS", "PS-id", "PSA", "SePS",
                                                         "DyPS"]
    assert paper.TABLES["2"].rows[-1].paper[4] == (318200, 2240)  # DyPS, Ride-Hailing (1) GMV


def test_table_on_a_tiny_budget(tmp_path, monkeypatch):
    preset = _write_preset(tmp_path, TINY_LBF)
    table = paper.Table("2", "tiny", ((preset, "return"),), (
        paper.Row("PS", "ps", {}, ((0.25, 0.03),)),
        paper.Row("Future", "not-a-method-yet", {}, ((0.5, 0.1),)),
        paper.Row("Rode", None, {}, (None,), note="not planned"),
    ))
    monkeypatch.setitem(paper.TABLES, "2", table)
    out = tmp_path / "results"
    args = paper.parse_args(["--table", "2", "--seeds", "2", "--steps", "320", "--episodes", "3",
                             "--out", str(out)])
    out.mkdir()
    markdown = paper.run_table(args)

    assert "| PS (paper) | 0.250 ± 0.030 |" in markdown
    assert "| Future (ours) | missing |" in markdown and "| Rode (ours) | missing |" in markdown
    assert "unknown method 'not-a-method-yet'" in markdown and "not planned" in markdown
    assert (out / "table2.md").read_text() == markdown

    (row,) = list(csv.DictReader(open(out / "table2.csv")))
    assert row["method"] == "PS" and row["metric"] == "return" and row["seeds"] == "2"
    per_seed = [float(v) for v in row["per_seed"].split()]
    assert len(per_seed) == 2 and float(row["mean"]) == pytest.approx(sum(per_seed) / 2)

    data = json.loads((out / "table2.json").read_text())
    assert set(data["missing"]) == {"Future", "Rode"}
    runs = data["marl_eval"]["lbf"][preset]["PS"]
    assert sorted(runs) == ["run_0", "run_1"]
    for seed, run in enumerate(runs.values()):
        assert run["step_0"]["step_count"] == 320
        assert len(run["step_0"]["return"]) == 3 == len(run["absolute_metrics"]["return"])
        assert sum(run["step_0"]["return"]) / 3 == pytest.approx(per_seed[seed], rel=1e-5)

    # A second call reuses the cached job instead of training again.
    # Some of a table's scenarios: their own files, the whole table's are left as they are.
    assert paper.table_stem("3", ["ridehailing-2"], subset=True) == "table3_ridehailing-2"
    assert paper.table_stem("3", ["ridehailing-1", "ridehailing-2"], subset=False) == "table3"

    cached = list((out / "paper_runs").rglob("*.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    paper.run_table(args)
    assert cached[0].stat().st_mtime_ns == stamp


def test_rows_trains_only_the_rows_named_and_reuses_cached_ones(tmp_path, monkeypatch):
    preset = _write_preset(tmp_path, TINY_LBF)
    table = paper.Table("2", "tiny", ((preset, "return"),), (
        paper.Row("PS", "ps", {}, ((0.25, 0.03),)),
        paper.Row("NoPS", "nops", {}, ((0.3, 0.02),)),
    ))
    monkeypatch.setitem(paper.TABLES, "2", table)
    out = tmp_path / "results"
    out.mkdir()
    base = ["--table", "2", "--seeds", "1", "--steps", "320", "--episodes", "2", "--out", str(out)]

    markdown = paper.run_table(paper.parse_args([*base, "--rows", "PS"]))
    assert "| NoPS (ours) | not run |" in markdown and "| PS (ours) | not run |" not in markdown
    assert len(list((out / "paper_runs").rglob("*.json"))) == 1
    stem = Path(preset).stem
    assert f"PS on {stem}: {paper._git_rev()}, " in markdown

    # NoPS is trained now; PS comes from the cache, with its own revision and date.
    markdown = paper.run_table(paper.parse_args([*base, "--rows", "NoPS"]))
    assert "not run" not in markdown and f"NoPS on {stem}: " in markdown
    assert len(list((out / "paper_runs").rglob("*.json"))) == 2


def test_rows_must_name_rows_of_the_table(capsys):
    with pytest.raises(SystemExit):
        paper.parse_args(["--table", "2", "--rows", "DyPS,Rodent"])
    assert "['Rodent'] not rows of table 2; allowed: NoPS, PS, PS-id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paper.parse_args(["--figure", "9", "--rows", "DyPS"])
