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


def test_publish_swaps_files_and_folders_in_and_leaves_other_entries(tmp_path) -> None:
    from curation.io import PUBLISHING, publish

    out = tmp_path / "out"
    with publish(out) as staging:
        write_json(staging / "a.json", {"run": 1})
        (staging / "images").mkdir()
        (staging / "images" / "1.png").write_bytes(b"one")
    (out / ".gitignore").write_text("/images\n")  # DVC's, not ours
    with publish(out) as staging:
        write_json(staging / "a.json", {"run": 2})
        (staging / "images").mkdir()
        (staging / "images" / "2.png").write_bytes(b"two")
    assert sorted(p.name for p in out.iterdir()) == [".gitignore", "a.json", "images"]
    assert [p.name for p in (out / "images").iterdir()] == ["2.png"]  # the old folder replaced, not merged
    assert (out / "a.json").read_text() == '{\n  "run": 2\n}\n' and not (out / PUBLISHING).exists()


def test_a_failed_publish_changes_nothing_and_names_the_output(tmp_path) -> None:
    import errno

    from curation.errors import OutputError
    from curation.io import publish

    out = tmp_path / "out"
    with publish(out) as staging:
        write_json(staging / "a.json", {"run": 1})
        write_json(staging / "b.json", {"run": 1})
    with pytest.raises(OutputError) as failed, publish(out) as staging:
        write_json(staging / "a.json", {"run": 2})
        with atomic_path(staging / "b.json") as tmp:
            tmp.write_text("{")
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert str(failed.value) == (
        f"cannot write {out / 'b.json'}: disk quota exceeded (EDQUOT); free space within your quota or choose "
        "another out folder"
    )
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "a.json": '{\n  "run": 1\n}\n',
        "b.json": '{\n  "run": 1\n}\n',
    }


def test_staging_left_by_a_killed_run_is_removed_by_the_next_one(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from curation.io import publish

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    abandoned = out / f".publish-{int(dead.stdout)}-new-x"
    running = out / f".publish-{os.getpid()}-new-y"  # a run still going (this process): never touched
    for folder in (abandoned, running):
        (folder / "images").mkdir(parents=True)
    with publish(out) as staging:
        write_json(staging / "a.json", {})
    assert sorted(p.name for p in out.iterdir()) == [running.name, "a.json"]


def test_a_write_only_os_error_outside_publish_is_one_line(tmp_path, capsys) -> None:
    import errno

    import typer

    from curation.console import user_errors

    def full() -> None:
        with user_errors():
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "images" / "a.png"))

    def bug() -> None:
        with user_errors():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    with pytest.raises(typer.Exit):
        full()
    printed = " ".join(capsys.readouterr().err.split())
    assert printed == f"error: cannot write {tmp_path / 'images' / 'a.png'}: no space left on device (ENOSPC); " + (
        "free space there or choose an out folder on a larger disk"
    )
    with pytest.raises(FileNotFoundError):  # not a user's mistake: keeps its traceback
        bug()


def test_an_input_that_cannot_be_read_inside_publish_is_not_called_a_write(tmp_path) -> None:
    from curation.io import publish

    with pytest.raises(FileNotFoundError), publish(tmp_path / "out") as staging:
        write_json(staging / "a.json", {})
        (tmp_path / "raw" / "gone.png").read_bytes()
    assert list((tmp_path / "out").iterdir()) == []
