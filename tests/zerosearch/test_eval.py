import pytest

from zerosearch.eval import resolve_model_path, summarize, to_markdown


def test_summary_has_per_source_macro_and_micro_rows():
    per_source = {
        "nq": {
            "em": [1.0, 0.0, 1.0, 1.0],
            "cover_em": [1.0] * 4,
            "f1": [1.0, 0.5, 1.0, 1.0],
            "searches": [1.0, 2.0, 0.0, 1.0],
            "answered": [1.0] * 4,
        },
        "popqa": {
            "em": [0.0, 0.0],
            "cover_em": [0.0, 1.0],
            "f1": [0.0, 0.5],
            "searches": [3.0, 1.0],
            "answered": [1.0, 0.0],
        },
    }
    table = summarize(per_source)
    assert table["nq"]["em"] == 0.75 and table["nq"]["n"] == 4
    assert table["avg"]["em"] == pytest.approx((0.75 + 0.0) / 2)  # mean of the per-source means
    assert table["all"]["em"] == pytest.approx(3 / 6)  # mean over every question
    assert table["all"]["searches"] == pytest.approx(8 / 6)
    markdown = to_markdown(table)
    assert markdown.splitlines()[2].startswith("| nq | 4 | 0.750 |") and "| avg |" in markdown


def test_model_path_resolution(tmp_path):
    run = tmp_path / "run"
    hf = run / "global_step_7" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (run / "latest_checkpointed_iteration.txt").write_text("7")
    assert resolve_model_path(str(run)) == str(hf)  # a run folder: its latest checkpoint
    assert resolve_model_path(str(run / "global_step_7")) == str(hf)
    assert resolve_model_path(str(hf)) == str(hf)
    assert resolve_model_path("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"  # a hub id goes to from_pretrained
    sft = tmp_path / "sft"
    (sft / "global_step_3" / "model" / "huggingface").mkdir(parents=True)
    (sft / "global_step_3" / "model" / "huggingface" / "config.json").write_text("{}")
    (sft / "latest_checkpointed_iteration.txt").write_text("3")
    assert resolve_model_path(str(sft)) == str(sft / "global_step_3" / "model" / "huggingface")  # an SFT run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))
