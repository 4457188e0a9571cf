"""benchmarks.service's scale-out helpers: which configurations run, the /proc stat parser
behind the CPU columns, and the replica environment as the service's settings read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import service as bench
from service.settings import Settings


def test_local_runs_one_replica_milvus_every_count_at_every_level() -> None:
    got = bench.scale_configs(["local", "milvus"], [2, 1], ["Strong", "Session"])
    assert [(c.backend, c.replicas, c.consistency) for c in got] == [
        ("local", 1, ""),
        ("milvus", 1, "Strong"),
        ("milvus", 2, "Strong"),
        ("milvus", 1, "Session"),
        ("milvus", 2, "Session"),
    ]
    assert bench.scale_configs(["milvus"], [2], ["Bounded"]) == [
        bench.ScaleConfig("milvus", 2, "Bounded")
    ]


def test_parse_stat_reads_name_parent_and_cpu_ticks() -> None:
    # a command name with a space and a parenthesis, as /proc allows
    line = "4242 (milvus (x) 1) S 17 4242 4242 0 -1 4194560 1 2 3 4 250 31 7 8 20 0 9 0 5"
    assert bench.parse_stat(line) == ("milvus (x) 1", 17, 281)


def test_parse_stat_of_this_process() -> None:
    name, ppid, ticks = bench.parse_stat(Path("/proc/self/stat").read_text())
    assert name and ppid >= 0 and ticks >= 0


def test_replica_environment_is_what_the_service_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REID_AUTH_MODE", "all")  # a setting of ours must not leak in
    env = bench.replica_env(bench.ScaleConfig("milvus", 2, "Session"), "http://h:1", "HNSW")
    assert "REID_AUTH_MODE" not in env
    for key in list(os.environ):
        if key.startswith("REID_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("REID_"):
            monkeypatch.setenv(key, value)
    s = Settings(model_dir=tmp_path, data_dir=tmp_path)
    assert (s.gallery_backend, s.milvus_uri, s.milvus_consistency) == (
        "milvus",
        "http://h:1",
        "Session",
    )
    assert s.milvus_index_type == "HNSW"
    assert s.milvus_index_params == bench.HNSW_BUILD
    assert s.milvus_search_params == bench.HNSW_SEARCH
    assert s.max_inflight_requests == 256
    local = bench.replica_env(bench.ScaleConfig("local", 1), "", "HNSW")
    assert not any(k.startswith("REID_MILVUS") for k in local)
