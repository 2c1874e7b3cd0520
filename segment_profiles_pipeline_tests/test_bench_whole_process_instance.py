"""The whole-process benchmark times our commands on an existing Dagster instance (the user's),
created untimed, and still measures a fresh one: the two homes it prepares must be what it says."""

from __future__ import annotations

from pathlib import Path

from bench import whole_process

STORAGE = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


def test_existing_instance_has_its_storage_and_a_new_one_has_none(tmp_path: Path) -> None:
    existing = whole_process.existing_instance(tmp_path / "existing")
    new = whole_process.new_instance(tmp_path / "new")
    for home in (existing, new):
        assert (home / "dagster.yaml").read_text() == (
            whole_process.ROOT / "instance" / "dagster.yaml"
        ).read_text()
    assert all((existing / path).is_file() for path in STORAGE)
    assert not any((new / path).exists() for path in STORAGE)
    assert sorted(p.name for p in new.iterdir()) == ["dagster.yaml"]
