import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from zerosearch.plot import plot_run, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LINES = [
    {"step": 0, "val/score": 0.1, "val/em": 0.1, "val/nq/em": 0.2, "val/search/searches_mean": 1.0},
    {
        "step": 1,
        "reward/score/mean": 0.2,
        "reward/em/mean": 0.2,
        "search/searches_mean": 1.5,
        "curriculum/noise_p": 0.0,
        "timing_s/step": 3.2,
        "note": "text",
    },
    {
        "step": 2,
        "reward/score/mean": 0.9,
        "reward/em/mean": 0.9,
        "search/searches_mean": 9.0,
        "curriculum/noise_p": 0.9,
    },
    # the run resumed from step 1: step 2 again, then on
    {
        "step": 2,
        "reward/score/mean": 0.3,
        "reward/em/mean": 0.25,
        "search/searches_mean": 1.8,
        "curriculum/noise_p": 0.05,
        "val/score": 0.35,
        "val/em": 0.3,
        "val/search/searches_mean": 2.0,
    },
    {
        "step": 3,
        "reward/score/mean": 0.4,
        "reward/em/mean": 0.35,
        "search/searches_mean": 2.1,
        "curriculum/noise_p": 0.1,
        "timing_s/step": 3.0,
    },
]


def write_run(run_dir, lines=LINES):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run_dir


def assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def test_read_metrics_sorted_later_step_wins(tmp_path):
    series = read_metrics(str(write_run(tmp_path / "run") / "metrics.jsonl"))
    assert series["reward/score/mean"] == [(1, 0.2), (2, 0.3), (3, 0.4)]
    assert series["val/em"] == [(0, 0.1), (2, 0.3)]
    assert series["val/nq/em"] == [(0, 0.2)]
    assert series["timing_s/step"] == [(1, 3.2), (3, 3.0)]
    assert "note" not in series and "step" not in series


def test_read_metrics_later_line_replaces_whole_step(tmp_path):
    run = write_run(tmp_path / "run", [{"step": 4, "a": 1.0, "b": 2.0}, {"step": 4, "a": 3.0}, {"step": 1, "a": 0}])
    assert read_metrics(str(run / "metrics.jsonl")) == {"a": [(1, 0.0), (4, 3.0)]}


@pytest.mark.parametrize(
    "bad, reason",
    [('{"step": 2, "a": ', "not valid JSON"), ("[1, 2]", "integer 'step'"), ('{"a": 1.0}', "integer 'step'")],
)
def test_read_metrics_corrupt_line(tmp_path, bad, reason):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "a": 1.0}) + "\n\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"metrics\.jsonl, line 3: .*{reason}"):
        read_metrics(str(path))


def test_plot_run_writes_all_figures(tmp_path):
    run = write_run(tmp_path / "run")
    paths = plot_run(str(run), extra_metrics=["timing_s/step", "val/nq/em"])
    names = ["reward.png", "em.png", "searches.png", "noise.png", "custom.png"]
    assert paths == [str(run / "plots" / name) for name in names]
    for path in paths:
        assert_png(path)


def test_plot_run_skips_absent_figures(tmp_path, capsys):
    run = write_run(tmp_path / "run", [{"step": 0, "val/em": 0.1}, {"step": 1, "reward/em/mean": 0.2}])
    out = tmp_path / "figures"
    paths = plot_run(str(run), str(out), extra_metrics=["absent/key"])
    assert paths == [str(out / "em.png")]
    assert_png(paths[0])
    err = capsys.readouterr().err
    for name in ("reward.png", "searches.png", "noise.png", "custom.png"):
        assert f"skipped {name}" in err
    assert "skipped em.png" not in err and "absent/key" in err


def test_plot_run_without_metrics_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl does not exist"):
        plot_run(str(tmp_path))


def test_cli(tmp_path):
    run = write_run(tmp_path / "run")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zerosearch.plot", str(run), "--out", str(out), "--metrics", "timing_s/step"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    names = ["reward.png", "em.png", "searches.png", "noise.png", "custom.png"]
    assert done.stdout.splitlines() == [str(out / name) for name in names]
    for name in names:
        assert_png(out / name)

    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n', encoding="utf-8")
    bad = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1
    assert "error:" in bad.stderr and "line 2" in bad.stderr and "Traceback" not in bad.stderr
