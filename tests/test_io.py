from __future__ import annotations

import pytest

from curation.io import _UMASK, atomic_path, write_json


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fil")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_json_is_stable_and_utf8(tmp_path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "a": "균열"})
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n  "a": "균열",\n  "b": 1\n}\n'


def test_outputs_get_the_usual_permissions(tmp_path) -> None:
    path = write_json(tmp_path / "a.json", {})
    assert path.stat().st_mode & 0o777 == 0o666 & ~_UMASK
