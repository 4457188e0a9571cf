"""APR attribute .mat files: tiny hand-made files with hand-computed labels, and the real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from training.data.attributes import (
    AttributeTable,
    colour_group,
    join_attributes,
    load_attribute_tables,
    load_attributes,
)
from training.data.errors import DatasetError
from training.data.types import Sample


def cell(ids: list[str]) -> np.ndarray:
    """``image_index`` as the real files store it: a 1 x N cell of 1-element strings."""
    out = np.empty((1, len(ids)), dtype=object)
    for i, s in enumerate(ids):
        out[0, i] = np.array([s])
    return out


def split_struct(fields: dict[str, list[int]], ids: Any) -> dict[str, Any]:
    d: dict[str, Any] = {k: np.array([v], dtype=np.uint8) for k, v in fields.items()}
    d["image_index"] = ids
    return d


def write_mat(path: Path, splits: dict[str, dict[str, Any]], top: str = "toy_attribute") -> Path:
    scipy.io.savemat(str(path), {top: splits})
    return path


# Three identities. Columns: 2 = yes / second class, 1 = no / first class, 0 = unknown.
TRAIN = {
    "age": [1, 4, 0],
    "hat": [2, 1, 0],
    "upred": [2, 1, 1],
    "gender": [1, 2, 2],
    "upblue": [1, 1, 2],
    "downblack": [2, 2, 1],  # id 7 marks two lower colours, id 9 none
    "downwhite": [1, 2, 1],
}
TEST_ORDER = ["downwhite", "gender", "upblue", "upred", "hat", "age", "downblack"]


def toy_file(tmp_path: Path) -> Path:
    test = {k: [TRAIN[k][0]] for k in TEST_ORDER}  # one identity, fields in another order
    return write_mat(
        tmp_path / "toy.mat",
        {
            "train": split_struct(TRAIN, cell(["0002", "0007", "0009"])),
            "test": split_struct(test, cell(["0011"])),
        },
    )


def test_colour_group() -> None:
    assert colour_group("upblack") == ("upcolor", "black")
    assert colour_group("downbrown") == ("downcolor", "brown")
    assert colour_group("up") is None and colour_group("down") is None
    assert colour_group("hat") is None


def test_paper_schema_keeps_every_colour_binary(tmp_path: Path) -> None:
    """APR Sec. 3: "the color attributes are binary ones": one attribute per field."""
    tables = load_attribute_tables(toy_file(tmp_path))  # colours="binary" is the default
    train = tables["train"]
    schema = train.schema
    assert schema.names == ["age", "hat", "upred", "gender", "upblue", "downblack", "downwhite"]
    assert schema["upred"].classes == ("no", "yes") and schema["upred"].group == "upcolor"
    assert schema["downwhite"].group == "downcolor" and schema["hat"].group is None
    expected = {  # 2 -> 1 (yes), 1 -> 0 (no), 0 -> -1; no or two colours keep their labels
        2: [0, 1, 1, 0, 0, 1, 0],
        7: [3, 0, 0, 1, 0, 1, 1],
        9: [-1, -1, 0, 1, 1, 0, 0],
    }
    for pid, row in expected.items():
        assert train.labels[pid].tolist() == row
    assert tables["test"].labels[11].tolist() == expected[2]


def test_schema_and_labels_hand_computed(tmp_path: Path) -> None:
    tables = load_attribute_tables(toy_file(tmp_path), colours="grouped")
    train = tables["train"]
    schema = train.schema
    assert schema.names == ["age", "hat", "upcolor", "gender", "downcolor"]
    assert schema["age"].classes == ("young", "teenager", "adult", "old")
    assert schema["hat"].classes == ("no", "yes")
    assert schema["gender"].classes == ("male", "female")
    assert schema["upcolor"].classes == ("red", "blue") and schema["upcolor"].group == "up"
    assert schema["downcolor"].classes == ("black", "white") and schema["downcolor"].group == "down"
    assert schema.source == "toy.mat"
    assert train.identities == [2, 7, 9]
    expected = {
        2: [0, 1, 0, 0, 0],
        7: [3, 0, -1, 1, -1],  # no upper colour marked, two lower colours marked
        9: [-1, -1, 1, 1, -1],  # 0 = unknown; no lower colour marked
    }
    for pid, row in expected.items():
        assert train.labels[pid].dtype == np.int64
        assert train.labels[pid].tolist() == row
    # the test split has other field order but is read by name under the same schema
    assert tables["test"].schema == schema
    assert tables["test"].labels[11].tolist() == expected[2]
    assert train.unknown_counts() == {"age": 1, "hat": 1, "upcolor": 1, "gender": 0, "downcolor": 2}


def test_char_array_identities_and_single_split(tmp_path: Path) -> None:
    ids = np.array(["0005", "0006"])  # saved as a char matrix, not a cell
    path = write_mat(tmp_path / "c.mat", {"train": split_struct({"bag": [1, 2]}, ids)})
    table = load_attributes(path, "train")
    assert {k: v.tolist() for k, v in table.labels.items()} == {5: [0], 6: [1]}


def test_numeric_identities_and_generic_categorical(tmp_path: Path) -> None:
    ids = np.array([[3, 4, 5]], dtype=np.int32)
    path = write_mat(tmp_path / "n.mat", {"train": split_struct({"size": [1, 3, 0]}, ids)})
    table = load_attributes(path)
    assert table.schema["size"].classes == ("1", "2", "3")
    assert [table.labels[p].tolist() for p in (3, 4, 5)] == [[0], [2], [-1]]


def test_load_all_merges_and_refuses_conflicts(tmp_path: Path) -> None:
    merged = load_attributes(toy_file(tmp_path), "all")
    assert merged.identities == [2, 7, 9, 11]
    same = split_struct({"bag": [2]}, cell(["0001"]))
    other = split_struct({"bag": [1]}, cell(["0001"]))
    ok = write_mat(tmp_path / "ok.mat", {"train": same, "test": same})
    assert load_attributes(ok, "all").labels[1].tolist() == [1]
    bad = write_mat(tmp_path / "bad.mat", {"train": same, "test": other})
    with pytest.raises(DatasetError, match="identity 1 annotated differently"):
        load_attributes(bad, "all")
    with pytest.raises(DatasetError, match=r"has no split 'val'; it has \['test', 'train'\]"):
        load_attributes(ok, "val")


def test_errors_name_file_split_and_field(tmp_path: Path) -> None:
    bad_value = write_mat(
        tmp_path / "v.mat", {"train": split_struct({"hat": [1, 3]}, cell(["1", "2"]))}
    )
    with pytest.raises(DatasetError, match=r"v.mat:train.hat has values \[3\]"):
        load_attributes(bad_value)
    bad_colour = write_mat(
        tmp_path / "col.mat",
        {"train": split_struct({"upred": [1, 3], "upblue": [2, 1]}, cell(["1", "2"]))},
    )
    with pytest.raises(DatasetError, match=r"col.mat:train.upred has values \[3\]"):
        load_attributes(bad_colour)
    differ = write_mat(
        tmp_path / "d.mat",
        {
            "train": split_struct({"hat": [1]}, cell(["1"])),
            "test": split_struct({"bag": [1]}, cell(["2"])),
        },
    )
    with pytest.raises(DatasetError, match=r"differ in fields \['bag', 'hat'\]"):
        load_attribute_tables(differ)
    lone = write_mat(
        tmp_path / "l.mat", {"train": split_struct({"upred": [1, 2]}, cell(["1", "2"]))}
    )
    with pytest.raises(DatasetError, match="l.mat: cannot build .*upcolor.*at least 2 classes"):
        load_attributes(lone, colours="grouped")  # one colour is no multi-class attribute
    no_index = tmp_path / "i.mat"
    scipy.io.savemat(str(no_index), {"x": {"train": {"hat": np.array([[1]], dtype=np.uint8)}}})
    with pytest.raises(DatasetError, match="i.mat:train has no 'image_index'"):
        load_attributes(no_index)
    two_tops = tmp_path / "t.mat"
    scipy.io.savemat(str(two_tops), {"a": np.zeros(1), "b": np.zeros(1)})
    with pytest.raises(
        DatasetError, match=r"t.mat: expected one top-level struct, found \['a', 'b'\]"
    ):
        load_attributes(two_tops)
    not_mat = tmp_path / "n.mat"
    not_mat.write_bytes(b"hello")
    with pytest.raises(DatasetError, match="cannot read attribute file .*n.mat"):
        load_attributes(not_mat)


def test_join_attributes_reports_missing(tmp_path: Path) -> None:
    table = load_attributes(toy_file(tmp_path), colours="grouped")
    samples = [
        Sample("a", 7, 1),
        Sample("b", 0, 1),
        Sample("c", 2, 2),
        Sample("d", 40, 1),
        Sample("e", 7, 2),
    ]
    labels, missing = join_attributes(samples, table)
    assert labels.shape == (5, 5) and labels.dtype == np.int64
    assert missing == [0, 40]
    for i, s in enumerate(samples):
        want = table.labels[s.pid] if s.pid in table.labels else np.full(5, -1)
        assert labels[i].tolist() == want.tolist()
    empty, none_missing = join_attributes([], table)
    assert empty.shape == (0, 5) and none_missing == []


def raw_split(path: Path, split: str) -> tuple[list[int], dict[str, np.ndarray]]:
    """An independent read with loadmat's default record layout."""
    top = scipy.io.loadmat(str(path))
    key = next(k for k in top if not k.startswith("__"))
    s = top[key][split][0, 0]
    ids = [int(str(x[0])) for x in s["image_index"][0, 0].ravel()]
    fields = {f: s[f][0, 0].ravel().astype(int) for f in s.dtype.names if f != "image_index"}
    return ids, fields


def check_against_raw(table: AttributeTable, path: Path, split: str) -> None:
    """Every identity's labels, recomputed field by field from the raw struct."""
    ids, raw = raw_split(path, split)
    assert table.identities == sorted(ids)
    for j, attr in enumerate(table.schema):
        for i, pid in enumerate(ids):
            got = int(table.labels[pid][j])
            if attr.name in raw:  # a field of its own (colours too in the paper's schema)
                v = raw[attr.name][i]
                assert got == (v - 1 if v > 0 else -1), (pid, attr.name)
            else:
                marked = [c for c in attr.classes if raw[attr.group + c][i] == 2]
                assert got == (attr.classes.index(marked[0]) if len(marked) == 1 else -1)


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "count"), [("market", 27), ("duke", 23)])
def test_real_files_give_the_papers_attribute_counts(
    shared_data: Path, name: str, count: int
) -> None:
    path = shared_data / "attributes" / f"{name}_attribute.mat"
    tables = load_attribute_tables(path)
    schema = tables["train"].schema
    assert len(schema) == count  # APR Sec. 3: 27 on Market, 23 on Duke
    assert all(a.num_classes == 2 for a in schema if a.name != "age")
    families = {a.group for a in schema} - {None}
    assert families == {"upcolor", "downcolor"}
    for split in ("train", "test"):
        check_against_raw(tables[split], path, split)


@pytest.mark.realdata
def test_real_market_attributes(shared_data: Path) -> None:
    path = shared_data / "attributes" / "market_attribute.mat"
    tables = load_attribute_tables(path, colours="grouped")
    assert len(tables["train"]) == 751 and len(tables["test"]) == 750
    schema = tables["train"].schema
    assert len(schema) == 12  # APR's 12 from 27 fields
    assert sorted(schema.names) == sorted(
        [
            "age",
            "backpack",
            "bag",
            "handbag",
            "downcolor",
            "upcolor",
            "clothes",
            "down",
            "up",
            "hair",
            "hat",
            "gender",
        ]
    )
    assert schema["upcolor"].num_classes == 8 and schema["downcolor"].num_classes == 9
    assert schema["age"].num_classes == 4
    assert sum(1 if a.group is None else a.num_classes for a in schema) == 27
    assert tables["train"].unknown_counts()["upcolor"] == 78
    assert tables["train"].unknown_counts()["downcolor"] == 30
    for split in ("train", "test"):
        check_against_raw(tables[split], path, split)


@pytest.mark.realdata
def test_real_duke_attributes(shared_data: Path) -> None:
    path = shared_data / "attributes" / "duke_attribute.mat"
    tables = load_attribute_tables(path, colours="grouped")
    assert len(tables["train"]) == 702 and len(tables["test"]) == 1110
    schema = tables["train"].schema
    assert len(schema) == 10  # APR's 10 from 23 fields
    assert schema["upcolor"].num_classes == 8 and schema["downcolor"].num_classes == 7
    assert sum(1 if a.group is None else a.num_classes for a in schema) == 23
    train_unknown = tables["train"].unknown_counts()
    assert train_unknown["top"] == 2  # the two 0 entries
    assert tables["test"].unknown_counts()["downcolor"] == 34  # 11 none + 22 two + 1 three marked
    for split in ("train", "test"):
        check_against_raw(tables[split], path, split)
