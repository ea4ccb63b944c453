"""python -m train.finetune.compare: runs side by side from their eval.csv (written here by the
trainer's own CSV writer, ``RunLog.table``), the figures, the stretch compared, the PNG, and
errors that name the file and line at fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train.finetune import compare
from train.finetune.logs import RunLog

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path, laps, falls=None, mts=None, step=61440, track="oval", other=None, medians=None,
              firsts=None, edges=None) -> Path:
    """A run folder whose eval.csv has one evaluation per lap in ``laps`` (None: no lap); ``medians``:
    a median_best_lap_s per evaluation, as a run with several eval starts writes; ``firsts``: the first
    start's (lap, falls) per evaluation, as that run writes them too; ``edges``: closest_to_edge_u per
    evaluation."""
    folder.mkdir(parents=True, exist_ok=True)
    falls = falls or [0] * len(laps)
    mts = mts or list(range(10, 10 + len(laps)))
    rows = []
    for i, (lap, f, m) in enumerate(zip(laps, falls, mts, strict=True)):
        rows.append({"update": 40 * (i + 1), "frames": step * (i + 1), "track": track, "best_lap_s": lap,
                     "mean_lap_s": lap, "laps": 3 if lap else 0, "falls": f, "mini_turbos": m, "return": 1.0})
        if medians:
            rows[-1]["median_best_lap_s"] = medians[i]
        if firsts:
            rows[-1]["first_start_lap_s"], rows[-1]["first_start_falls"] = firsts[i]
        if edges:
            rows[-1]["closest_to_edge_u"] = edges[i]
        if other:
            rows.append({**rows[-1], "track": other, "best_lap_s": 99.0, "falls": 1})
    RunLog(str(folder), tensorboard=False).table("eval.csv", rows)
    return folder


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "train.finetune.compare", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return proc


def test_figures_of_two_runs_over_the_same_stretch(tmp_path):
    a = write_run(tmp_path / "A", [41.0, 40.5, 41.2, 40.0, 39.9, 39.8, 39.5, 39.7],
                  falls=[0, 0, 0, 1, 0, 0, 0, 0], other="twisty")
    b = write_run(tmp_path / "B", [41.0, 40.9, 40.8, 40.7, 40.6, 40.5])
    proc = run_cli(a, b, "--reference", "38.0", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["track"] == "oval" and res["to_frames"] == 6 * 61440  # B's end: both cover the same stretch
    ra, rb = res["runs"]["A"], res["runs"]["B"]
    assert ra["evaluations"] == 6 and rb["evaluations"] == 6
    assert ra["clone_lap_s"] == 41.0 and ra["best_lap_s"] == 39.8 and ra["best_at_frames"] == 6 * 61440
    assert ra["fell"] == 1 and ra["fell_at_frames"] == [4 * 61440]  # the other track's falls are not counted
    assert ra["slower_than_clone"] == 1 and ra["worst_after_warmup_s"] == 41.2
    assert ra["mean_last5_s"] == pytest.approx((40.5 + 41.2 + 40.0 + 39.9 + 39.8) / 5, abs=1e-3)
    assert ra["mini_turbos_last5"] == [11, 12, 13, 14, 15]
    assert ra["best_vs_reference_pct"] == pytest.approx((39.8 / 38 - 1) * 100, abs=0.01)
    assert rb["fell"] == 0 and rb["slower_than_clone"] == 0 and rb["best_lap_s"] == 40.5
    assert ra["closest_to_edge_last5_u"] is None  # a log without the column
    # the whole logs, and a stretch given in frames
    whole = json.loads(run_cli(a, b, "--to", "all", "--json").stdout.strip().splitlines()[-1])
    assert whole["to_frames"] is None and whole["runs"]["A"]["best_lap_s"] == 39.5
    early = json.loads(run_cli(a, b, "--to", "200000", "--json").stdout.strip().splitlines()[-1])
    assert early["runs"]["A"]["evaluations"] == 3 and early["runs"]["A"]["best_lap_s"] == 40.5
    # the other track by name
    tw = json.loads(run_cli(a, "--track", "twisty", "--json").stdout.strip().splitlines()[-1])
    assert tw["runs"]["A"]["fell"] == 8 and tw["runs"]["A"]["best_lap_s"] == 99.0


def test_the_closest_approach_to_the_edge_of_the_last_evaluations(tmp_path):
    """eval.csv's closest_to_edge_u: the closest of the last 5 evaluations' best laps, in the JSON and
    the table; an evaluation with no lap (no value) is left out."""
    run = write_run(tmp_path / "E", [40.0, 39.9, 39.8, 39.7, 39.6, None, 39.5],
                    edges=[0.12, 0.05, 0.6, 0.45, 0.7, None, 0.5])
    proc = run_cli(run, "--to", "all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["runs"]["E"]["closest_to_edge_last5_u"] == 0.45
    table = run_cli(run, "--to", "all")
    assert "edge, last 5" in table.stdout and "0.45 u" in table.stdout


def test_the_median_of_several_starts_instead_of_the_best(tmp_path):
    a = write_run(tmp_path / "A", [41.0, 39.0, 39.5], medians=[41.2, 40.1, 39.8])
    res = json.loads(run_cli(a, "--lap", "median", "--json").stdout.strip().splitlines()[-1])
    assert res["lap"] == "median" and res["runs"]["A"]["best_lap_s"] == 39.8  # not the lucky 39.0
    assert res["runs"]["A"]["clone_lap_s"] == 41.2
    old = write_run(tmp_path / "old", [41.0, 40.0])  # a log from before the column: told what to do
    proc = run_cli(old, "--lap", "median")
    assert proc.returncode == 2 and "eval.csv" in proc.stderr and "median_best_lap_s" in proc.stderr
    assert "--lap best" in proc.stderr


def test_a_lap_of_the_clone_s_frame_count_is_not_slower_for_float_noise(tmp_path):
    # 1199 frames summed two ways in floating point: the same lap, 1e-12 s apart; one frame more is slower
    lap = 1199 / 30
    a = write_run(tmp_path / "A", [lap, lap + 2e-12, lap + 1 / 30, lap - 1 / 30])
    run = json.loads(run_cli(a, "--json").stdout.strip().splitlines()[-1])["runs"]["A"]
    assert run["slower_than_clone"] == 1 and run["worst_after_warmup_s"] == pytest.approx(lap + 1 / 30)


def test_the_first_start_alone_reads_as_a_one_start_run(tmp_path):
    # 4 starts: the best lap is the luckiest start's, falls count on any start; the first start alone
    a = write_run(tmp_path / "A", [41.0, 39.0, 39.5, 38.9], falls=[0, 1, 0, 2], medians=[41.2, 40.1, 39.8, 39.6],
                  firsts=[(41.1, 0), (41.3, 0), (None, 1), (39.2, 0)])
    res = json.loads(run_cli(a, "--lap", "first", "--json").stdout.strip().splitlines()[-1])
    run = res["runs"]["A"]
    assert res["lap"] == "first" and run["clone_lap_s"] == 41.1 and run["best_lap_s"] == 39.2
    assert run["fell"] == 1 and run["fell_at_frames"] == [3 * 61440]  # that start's fall, not the others'
    assert run["slower_than_clone"] == 2  # 41.3 s, and the evaluation without a lap
    every = json.loads(run_cli(a, "--json").stdout.strip().splitlines()[-1])["runs"]["A"]
    assert every["fell"] == 2 and every["best_lap_s"] == 38.9
    old = write_run(tmp_path / "old", [41.0, 40.0], medians=[41.0, 40.0])  # from before the columns
    proc = run_cli(old, "--lap", "first")
    assert proc.returncode == 2 and "eval.csv" in proc.stderr and "first_start_lap_s" in proc.stderr
    assert "first_start_falls" in proc.stderr and "--lap best" in proc.stderr


def test_table_for_people_and_the_png(tmp_path):
    a = write_run(tmp_path / "A", [41.0, None, 40.0], falls=[0, 3, 0])
    png = tmp_path / "out" / "cmp.png"
    proc = run_cli(a, "--reference", "39", "--png", png)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("track oval") and "39.00 s (given)" in lines[0]
    row = next(line for line in lines if line.startswith("A "))
    # no lap counts as slower than the clone; the fall is listed with where it came
    assert "40.00 s" in row and "+2.56%" in row and "1 (at 0.12M)" in row and row.rstrip().endswith("1")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not [p for p in png.parent.iterdir() if p.name != "cmp.png"]  # no temp file left


def _plan(lap: float) -> dict:
    from envs.kartsim.movie import make_movie

    return make_movie({"actions": [[0, 0, 1, 0, 0]] * 3, "seed": 0, "laps": 1, "lap_times": [lap],
                       "best_lap_s": lap, "race_time_s": lap, "falls": 0, "mini_turbos": 0, "finished": True},
                      "luigi")


def test_reference_from_a_movie_file_or_the_plan_cache(tmp_path, monkeypatch):
    from envs.kartsim.movie import CACHE_ENV, save_movie, store_plan

    a = write_run(tmp_path / "A", [41.0, None, 40.0], track="luigi")
    movie = tmp_path / "plan.json"
    save_movie(movie, _plan(36.5))
    rows = compare.read_evals(str(a), None)[1]
    res = compare.summarise(rows, compare.reference_lap(str(movie), "luigi")[0])
    assert res["best_vs_reference_pct"] == pytest.approx((40 / 36.5 - 1) * 100, abs=0.01)
    assert res["worst_after_warmup_s"] == 40.0 and res["slower_than_clone"] == 1  # no lap is slower, not worst
    # without --reference: the track's cached planned lap, where there is one
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert compare.reference_lap(None, "luigi") == (None, None)
    store_plan(_plan(35.0))
    out = json.loads(subprocess.run([sys.executable, "-m", "train.finetune.compare", str(a), "--json"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1])
    assert out["reference_s"] == 35.0 and out["reference_from"] == "the planned-lap cache"
    assert compare.reference_lap(None, "no-such-track") == (None, None)


def test_errors_name_the_file_and_line(tmp_path):
    proc = run_cli(tmp_path / "nothere")
    assert proc.returncode == 2 and "nothere" in proc.stderr and "eval.csv" in proc.stderr
    a = write_run(tmp_path / "A", [41.0, 40.0])
    text = (a / "eval.csv").read_text().splitlines()
    bad = text[2].split(",")
    bad[6] = "many"  # the falls column of line 3
    (a / "eval.csv").write_text("\n".join([*text[:2], ",".join(bad)]) + "\n")
    proc = run_cli(a)
    assert proc.returncode == 2 and "eval.csv, line 3" in proc.stderr and "many" in proc.stderr
    b = write_run(tmp_path / "B", [41.0])
    proc = run_cli(b, "--track", "rainbow")
    assert proc.returncode == 2 and "no evaluation on track 'rainbow'" in proc.stderr and "oval" in proc.stderr
    proc = run_cli(b, "--to", "soon")
    assert proc.returncode == 2 and "--to" in proc.stderr
    proc = run_cli(b, write_run(tmp_path / "C", [41.0, 40.0]), "--to", "100")
    assert proc.returncode == 2 and "no evaluation by then" in proc.stderr
