import pickle

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from verl.protocol import DataProto, pad_dataproto_to_divisor, unpad_dataproto


def make(n=4, meta=None):
    """n rows: obs[i] = [2i, 2i+1], act[i] = i, text 'r<i>', info {'id': i}."""
    return DataProto.from_dict(
        tensors={"obs": torch.arange(2 * n).view(n, 2), "act": torch.arange(n)},
        non_tensors={"text": [f"r{i}" for i in range(n)], "info": [{"id": i} for i in range(n)]},
        meta_info={"temperature": 1.0} if meta is None else meta,
    )


def ids(data):
    return data.batch["act"].tolist()


# ---------------------------------------------------------------------- from_dict


def test_from_dict_builds_batches():
    d = make(3)
    assert len(d) == 3
    assert isinstance(d.batch, TensorDict)
    assert list(d.batch.batch_size) == [3]
    assert d.non_tensor_batch["text"].dtype == object
    assert d.non_tensor_batch["text"].tolist() == ["r0", "r1", "r2"]
    assert d.meta_info == {"temperature": 1.0}


def test_from_dict_keeps_list_of_lists_and_dicts_one_dimensional():
    d = DataProto.from_dict(non_tensors={"pairs": [[1, 2], [3, 4]], "info": [{"a": 1}, {"a": 2}]})
    assert d.non_tensor_batch["pairs"].shape == (2,)
    assert d.non_tensor_batch["pairs"][1] == [3, 4]
    assert d.non_tensor_batch["info"].shape == (2,)
    assert d.non_tensor_batch["info"][0] == {"a": 1}
    assert list(d.batch.keys()) == [] and d.batch.batch_size == (2,)  # no tensors, still 2 rows
    assert len(d) == 2


def test_from_dict_length_mismatch_names_key_and_lengths():
    with pytest.raises(ValueError, match=r"'text'.*2.*'obs'.*3"):
        DataProto.from_dict(tensors={"obs": torch.zeros(3, 2)}, non_tensors={"text": ["a", "b"]})
    with pytest.raises(ValueError, match=r"'b'.*4.*'a'.*3"):
        DataProto.from_dict(tensors={"a": torch.zeros(3), "b": torch.zeros(4)})


def test_from_dict_rejects_bad_values():
    with pytest.raises(ValueError, match="0-d"):
        DataProto.from_dict(tensors={"x": torch.tensor(1.0)})
    with pytest.raises(TypeError, match="'s'"):
        DataProto.from_dict(non_tensors={"s": "abc"})
    with pytest.raises(ValueError, match="both"):
        DataProto.from_dict(tensors={"x": torch.zeros(2)}, non_tensors={"x": [1, 2]})


def test_from_dict_empty_and_zero_rows():
    assert len(DataProto.from_dict()) == 0
    d = DataProto.from_dict(tensors={"x": torch.zeros(0, 3)}, non_tensors={"s": []})
    assert len(d) == 0
    assert d.non_tensor_batch["s"].shape == (0,)


def test_from_single_dict_splits_tensors_and_non_tensors():
    d = DataProto.from_single_dict(
        {"x": torch.ones(2, 3), "s": np.array(["a", "b"]), "l": [[1], [2]]}, meta_info={"k": 1}
    )
    assert list(d.batch.keys()) == ["x"]
    assert set(d.non_tensor_batch) == {"s", "l"}
    assert d.non_tensor_batch["s"].dtype == object
    assert d.non_tensor_batch["l"].shape == (2,)
    assert d.meta_info == {"k": 1}
    with pytest.raises(TypeError, match="'n'"):
        DataProto.from_single_dict({"n": 3})


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match="'s'.*3 rows.*2"):
        DataProto(
            batch=TensorDict({"x": torch.zeros(2)}, batch_size=[2]),
            non_tensor_batch={"s": np.array([1, 2, 3], dtype=object)},
        )
    d = make(2)
    d.non_tensor_batch["bad"] = np.array([1], dtype=object)
    with pytest.raises(ValueError, match="'bad'"):
        d.check_consistency()


# --------------------------------------------------------------------- indexing


def test_getitem_slice_int_and_indices():
    d = make(5)
    assert ids(d[1:3]) == [1, 2]
    assert d[1:3].non_tensor_batch["text"].tolist() == ["r1", "r2"]
    one = d[-1]
    assert isinstance(one, DataProto) and len(one) == 1
    assert one.batch["obs"].tolist() == [[8, 9]]
    assert one.non_tensor_batch["info"][0] == {"id": 4}
    assert ids(d[[4, 0, 0]]) == [4, 0, 0]
    assert ids(d[np.array([2, 1])]) == [2, 1]
    assert ids(d[torch.tensor([3, 1])]) == [3, 1]
    assert d[torch.tensor([3, 1])].non_tensor_batch["text"].tolist() == ["r3", "r1"]
    with pytest.raises(IndexError):
        d[5]


def test_getitem_bool_mask():
    d = make(4)
    for mask in (
        [True, False, False, True],
        np.array([True, False, False, True]),
        torch.tensor([True, False, False, True]),
    ):
        sub = d[mask]
        assert ids(sub) == [0, 3]
        assert sub.non_tensor_batch["text"].tolist() == ["r0", "r3"]
    assert len(d[[False] * 4]) == 0
    with pytest.raises(IndexError, match="mask"):
        d[[True, False]]


def test_getitem_shares_meta_info_and_handles_empty_index():
    d = make(3)
    assert d[:2].meta_info is d.meta_info
    empty = d[[]]
    assert len(empty) == 0
    assert empty.batch["obs"].shape == (0, 2)
    assert empty.non_tensor_batch["text"].shape == (0,)


def test_len_without_tensor_batch():
    d = DataProto.from_dict(non_tensors={"s": ["a", "b", "c"]})
    assert len(d) == 3
    assert d[1:].non_tensor_batch["s"].tolist() == ["b", "c"]


# ------------------------------------------------------------------ select/pop


def test_select_subset_and_shares_tensors():
    d = make(3, meta={"a": 1, "b": 2})
    s = d.select(batch_keys=["obs"], non_tensor_batch_keys=["text"], meta_info_keys=["b"])
    assert list(s.batch.keys()) == ["obs"]
    assert list(s.non_tensor_batch) == ["text"]
    assert s.meta_info == {"b": 2}
    s.batch["obs"][0, 0] = 100
    assert d.batch["obs"][0, 0] == 100  # shared storage without deepcopy
    # Default keeps everything.
    assert set(d.select().batch.keys()) == {"obs", "act"}


def test_select_deepcopy_is_independent():
    d = make(3, meta={"cfg": {"x": 1}})
    s = d.select(deepcopy=True)
    s.batch["obs"][0, 0] = 100
    s.non_tensor_batch["info"][0]["id"] = 99
    s.meta_info["cfg"]["x"] = 5
    assert d.batch["obs"][0, 0] == 0
    assert d.non_tensor_batch["info"][0] == {"id": 0}
    assert d.meta_info["cfg"] == {"x": 1}


def test_select_missing_keys_raise():
    d = make(2)
    with pytest.raises(KeyError, match=r"nope.*act.*obs"):
        d.select(batch_keys=["nope"])
    with pytest.raises(KeyError, match=r"nope.*info.*text"):
        d.select(non_tensor_batch_keys=["nope"])
    with pytest.raises(KeyError, match=r"nope.*temperature"):
        d.select(meta_info_keys=["nope"])


def test_pop_removes_and_returns():
    d = make(3, meta={"a": 1, "b": 2})
    p = d.pop(batch_keys=["obs"], non_tensor_batch_keys=["info"], meta_info_keys=["a"])
    assert list(p.batch.keys()) == ["obs"] and len(p) == 3
    assert p.batch["obs"].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert p.non_tensor_batch["info"][2] == {"id": 2}
    assert p.meta_info == {"a": 1}
    assert list(d.batch.keys()) == ["act"]
    assert list(d.non_tensor_batch) == ["text"]
    assert d.meta_info == {"b": 2}
    # Nothing popped from the tensor batch still keeps the row count.
    assert len(d.pop(non_tensor_batch_keys=["text"])) == 3


def test_pop_missing_key_leaves_data_untouched():
    d = make(2)
    with pytest.raises(KeyError, match="missing"):
        d.pop(batch_keys=["obs"], non_tensor_batch_keys=["missing"])
    assert set(d.batch.keys()) == {"obs", "act"}


# ------------------------------------------------------------------------ union


def test_union_merges_keys():
    a = DataProto.from_dict(tensors={"x": torch.arange(3)}, non_tensors={"s": ["a", "b", "c"]}, meta_info={"m": 1})
    b = DataProto.from_dict(
        tensors={"x": torch.arange(3), "y": torch.ones(3)}, non_tensors={"t": [1, 2, 3]}, meta_info={"n": 2}
    )
    out = a.union(b)
    assert out is a
    assert set(a.batch.keys()) == {"x", "y"}
    assert set(a.non_tensor_batch) == {"s", "t"}
    assert a.meta_info == {"m": 1, "n": 2}


def test_union_into_data_without_tensor_batch():
    a = DataProto.from_dict(non_tensors={"s": ["a", "b"]})
    b = DataProto.from_dict(tensors={"y": torch.ones(2)})
    a.union(b)
    a.batch["z"] = torch.zeros(2)
    assert "z" not in b.batch.keys()


def test_union_conflicts_raise():
    a = DataProto.from_dict(tensors={"x": torch.arange(3)}, non_tensors={"s": [{"k": 1}, 2, 3]}, meta_info={"m": 1})
    with pytest.raises(ValueError, match="'x'"):
        a.union(DataProto.from_dict(tensors={"x": torch.tensor([0, 1, 5])}))
    with pytest.raises(ValueError, match="'s'"):
        a.union(DataProto.from_dict(non_tensors={"s": [{"k": 2}, 2, 3]}))
    with pytest.raises(ValueError, match="'m'"):
        a.union(DataProto.from_dict(tensors={"y": torch.zeros(3)}, meta_info={"m": 2}))
    assert "y" not in a.batch.keys()  # a failed union changes nothing
    with pytest.raises(ValueError, match="3 vs 2"):
        a.union(DataProto.from_dict(tensors={"y": torch.zeros(2)}))
    # Equal copies, including NaN entries, are not conflicts.
    f = DataProto.from_dict(tensors={"f": torch.tensor([1.0, float("nan")])}, non_tensors={"s": [{"k": 1}, [1, 2]]})
    f.union(
        DataProto.from_dict(tensors={"f": torch.tensor([1.0, float("nan")])}, non_tensors={"s": [{"k": 1}, [1, 2]]})
    )


# ---------------------------------------------------------------- chunk / split


def test_chunk_equal_parts():
    parts = make(6).chunk(3)
    assert [ids(p) for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert [p.non_tensor_batch["text"].tolist() for p in parts] == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    assert all(p.meta_info == {"temperature": 1.0} for p in parts)


def test_chunk_not_divisible_says_pad():
    with pytest.raises(ValueError, match="pad_dataproto_to_divisor"):
        make(5).chunk(2)


def test_chunk_zero_rows():
    parts = make(0).chunk(2)
    assert [len(p) for p in parts] == [0, 0]


def test_split_last_shorter():
    parts = make(5).split(2)
    assert [ids(p) for p in parts] == [[0, 1], [2, 3], [4]]
    assert parts[2].non_tensor_batch["info"][0] == {"id": 4}
    assert [ids(p) for p in make(4).split(4)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        make(4).split(0)


def test_split_zero_rows_round_trips_through_concat():
    parts = make(0).split(3)
    assert [len(p) for p in parts] == [0]
    back = DataProto.concat(parts)
    assert len(back) == 0 and back.batch["obs"].shape == (0, 2)


# ----------------------------------------------------------------------- concat


def test_concat_rows_and_object_arrays_of_dicts():
    d = make(5)
    out = DataProto.concat([d[3:], d[:1], d[1:3]])
    assert ids(out) == [3, 4, 0, 1, 2]
    info = out.non_tensor_batch["info"]
    assert info.shape == (5,) and info.dtype == object
    assert [x["id"] for x in info] == [3, 4, 0, 1, 2]
    assert out.meta_info is d.meta_info


def test_concat_meta_from_first_and_errors():
    a = DataProto.from_dict(tensors={"x": torch.zeros(1)}, meta_info={"first": True})
    b = DataProto.from_dict(tensors={"x": torch.ones(2)}, meta_info={"first": False})
    out = DataProto.concat([a, b])
    assert out.batch["x"].tolist() == [0.0, 1.0, 1.0]
    assert out.meta_info == {"first": True}
    with pytest.raises(ValueError):
        DataProto.concat([])
    with pytest.raises(ValueError, match="keys differ"):
        DataProto.concat([a, DataProto.from_dict(tensors={"y": torch.ones(1)})])
    with pytest.raises(ValueError, match=r"batch keys differ: item 0 has \['x'\], item 1 has \[\]"):
        DataProto.concat([a, DataProto.from_dict(non_tensors={"s": ["q"]})])


def test_concat_with_zero_row_parts():
    d = make(2)
    out = DataProto.concat([d[:0], d, d[:0]])
    assert ids(out) == [0, 1]
    assert out.non_tensor_batch["text"].tolist() == ["r0", "r1"]
    assert len(DataProto.concat([d[:0], d[:0]])) == 0


def test_select_on_zero_rows():
    s = make(0).select(batch_keys=["obs"], non_tensor_batch_keys=["text"])
    assert len(s) == 0 and s.batch["obs"].shape == (0, 2)


# --------------------------------------------------------------- repeat/reorder


def test_repeat_interleave_and_tile():
    d = make(3)
    r = d.repeat(2, interleave=True)
    assert ids(r) == [0, 0, 1, 1, 2, 2]
    assert r.non_tensor_batch["text"].tolist() == ["r0", "r0", "r1", "r1", "r2", "r2"]
    assert r.batch["obs"].tolist() == [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]
    t = d.repeat(repeat_times=3, interleave=False)
    assert ids(t) == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert [x["id"] for x in t.non_tensor_batch["info"]] == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert len(make(0).repeat(4)) == 0


def test_reorder_in_place():
    d = make(4)
    assert d.reorder(torch.tensor([2, 0, 3, 1])) is None
    assert ids(d) == [2, 0, 3, 1]
    assert d.batch["obs"].tolist() == [[4, 5], [0, 1], [6, 7], [2, 3]]
    assert d.non_tensor_batch["text"].tolist() == ["r2", "r0", "r3", "r1"]
    with pytest.raises(ValueError, match="permutation"):
        d.reorder(torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError):
        d.reorder(torch.tensor([0, 1]))


def test_to_returns_self():
    d = make(2)
    assert d.to("cpu") is d
    assert d.batch["obs"].device.type == "cpu"


# ------------------------------------------------------------------ pad / unpad


@pytest.mark.parametrize(
    "n, divisor, pad, expected_ids",
    [
        (0, 2, 0, []),
        (0, 4, 0, []),
        (1, 2, 1, [0, 0]),
        (1, 4, 3, [0, 0, 0, 0]),
        (3, 2, 1, [0, 1, 2, 0]),
        (3, 4, 1, [0, 1, 2, 0]),
        (5, 2, 1, [0, 1, 2, 3, 4, 0]),
        (5, 4, 3, [0, 1, 2, 3, 4, 0, 1, 2]),
        (4, 2, 0, [0, 1, 2, 3]),
        (4, 4, 0, [0, 1, 2, 3]),
    ],
)
def test_pad_and_unpad(n, divisor, pad, expected_ids):
    d = make(n)
    padded, pad_size = pad_dataproto_to_divisor(d, divisor)
    assert pad_size == pad
    assert len(padded) % divisor == 0
    assert ids(padded) == expected_ids
    assert padded.non_tensor_batch["text"].tolist() == [f"r{i}" for i in expected_ids]
    if pad == 0:
        assert padded is d
    restored = unpad_dataproto(padded, pad_size)
    assert ids(restored) == list(range(n))
    assert restored.non_tensor_batch["text"].tolist() == [f"r{i}" for i in range(n)]


def test_pad_then_chunk_then_unpad():
    padded, pad_size = pad_dataproto_to_divisor(make(5), 4)
    merged = DataProto.concat(padded.chunk(4))
    assert ids(unpad_dataproto(merged, pad_size)) == [0, 1, 2, 3, 4]


def test_pad_unpad_bad_sizes():
    with pytest.raises(ValueError):
        pad_dataproto_to_divisor(make(2), 0)
    with pytest.raises(ValueError):
        unpad_dataproto(make(2), 3)


# --------------------------------------------------------------------- pickling


def test_pickle_round_trip():
    d = make(3, meta={"step": 7})
    back = pickle.loads(pickle.dumps(d))
    assert torch.equal(back.batch["obs"], d.batch["obs"])
    assert back.non_tensor_batch["info"].tolist() == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert back.non_tensor_batch["text"].dtype == object
    assert back.meta_info == {"step": 7}
    assert len(pickle.loads(pickle.dumps(make(0)))) == 0


def test_ray_round_trip(ray_local):  # the session's Ray on loopback (tests/conftest.py)
    ray = ray_local

    @ray.remote
    def double_obs(d):
        out = d.select(deepcopy=True)
        out.batch["obs"] = out.batch["obs"] * 2
        out.non_tensor_batch["info"][0]["seen"] = True
        out.meta_info["worker"] = "done"
        return len(d), out

    d = make(3)
    n, out = ray.get(double_obs.remote(d))
    assert n == 3
    assert out.batch["obs"].tolist() == [[0, 2], [4, 6], [8, 10]]
    assert out.non_tensor_batch["info"][0] == {"id": 0, "seen": True}
    assert out.meta_info == {"temperature": 1.0, "worker": "done"}
    assert d.batch["obs"].tolist() == [[0, 1], [2, 3], [4, 5]]
