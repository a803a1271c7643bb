"""Which checkpoint a restart resumes from."""

import pytest

from verl.utils.checkpoint import LATEST_FILE, checkpoint_dir, load_first, mark_latest, resume_dirs


def test_auto_takes_the_step_marked_latest(tmp_path):
    assert resume_dirs("auto", None, str(tmp_path)) == []  # nothing saved yet: start afresh
    mark_latest(str(tmp_path), 4)
    mark_latest(str(tmp_path), 8)
    assert (tmp_path / LATEST_FILE).read_text() == "8" and not (tmp_path / (LATEST_FILE + ".tmp")).exists()
    for step in (2, 4, 8, 12):  # 12: an interrupted save, never marked latest
        (tmp_path / f"global_step_{step}").mkdir()
    (tmp_path / "global_step_x").mkdir()
    assert resume_dirs("auto", None, str(tmp_path)) == [checkpoint_dir(str(tmp_path), s) for s in (8, 4, 2)]
    assert checkpoint_dir(str(tmp_path), 8) == str(tmp_path / "global_step_8")


def test_disable_and_resume_path(tmp_path):
    mark_latest(str(tmp_path), 3)
    assert resume_dirs("disable", None, str(tmp_path)) == []
    (tmp_path / "global_step_1").mkdir()
    assert resume_dirs("resume_path", str(tmp_path / "global_step_1"), str(tmp_path)) == [
        str(tmp_path / "global_step_1")
    ]
    with pytest.raises(FileNotFoundError, match="resume_from_path='.*global_step_9'"):
        resume_dirs("resume_path", str(tmp_path / "global_step_9"), str(tmp_path))


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(caplog):
    tried = []

    def load(step_dir):
        tried.append(step_dir)
        if step_dir != "global_step_4":
            raise OSError(f"{step_dir}/dcp: header too small")

    assert load_first(["global_step_8", "global_step_4", "global_step_2"], load) == "global_step_4"
    assert tried == ["global_step_8", "global_step_4"]
    assert "could not resume from global_step_8 (OSError" in caplog.text
    assert load_first([], load) is None
    with pytest.raises(RuntimeError, match="no checkpoint could be loaded.*global_step_8/dcp: header too small"):
        load_first(["global_step_8", "global_step_6"], load)
