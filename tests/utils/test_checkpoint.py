"""Which checkpoint a restart resumes from."""

import pytest

from verl.utils.checkpoint import LATEST_FILE, checkpoint_dir, mark_latest, resume_dir


def test_auto_takes_the_step_marked_latest(tmp_path):
    assert resume_dir("auto", None, str(tmp_path)) is None  # nothing saved yet: start afresh
    mark_latest(str(tmp_path), 4)
    mark_latest(str(tmp_path), 8)
    assert (tmp_path / LATEST_FILE).read_text() == "8" and not (tmp_path / (LATEST_FILE + ".tmp")).exists()
    assert (
        resume_dir("auto", None, str(tmp_path)) == checkpoint_dir(str(tmp_path), 8) == str(tmp_path / "global_step_8")
    )


def test_disable_and_resume_path(tmp_path):
    mark_latest(str(tmp_path), 3)
    assert resume_dir("disable", None, str(tmp_path)) is None
    (tmp_path / "global_step_1").mkdir()
    assert resume_dir("resume_path", str(tmp_path / "global_step_1"), str(tmp_path)) == str(tmp_path / "global_step_1")
    with pytest.raises(FileNotFoundError, match="resume_from_path='.*global_step_9'"):
        resume_dir("resume_path", str(tmp_path / "global_step_9"), str(tmp_path))
