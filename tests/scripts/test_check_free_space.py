"""The install step's disk check: stops before pip with a message that names the path and fix."""

import collections
import importlib.util
import os

import pytest

_SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "check_free_space.py")
_spec = importlib.util.spec_from_file_location("check_free_space", _SCRIPT)
check_free_space = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_free_space)

Usage = collections.namedtuple("Usage", "total used free")
GIB = check_free_space.GIB


def test_existing_parent_walks_up_to_a_directory_that_exists(tmp_path):
    missing = tmp_path / "not" / "yet" / ".venv"
    assert check_free_space.existing_parent(str(missing)) == str(tmp_path)
    assert check_free_space.existing_parent(str(tmp_path)) == str(tmp_path)


def test_shortfalls_lists_only_paths_below_the_need(tmp_path):
    free = {str(tmp_path / "a"): 2 * GIB, str(tmp_path / "b"): 9 * GIB}
    for p in free:
        os.mkdir(p)
    short = check_free_space.shortfalls(
        list(free), 7 * GIB, disk_usage=lambda p: Usage(0, 0, free[p])
    )
    assert short == [(str(tmp_path / "a"), 2 * GIB)]


def test_main_fails_with_path_free_space_and_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(check_free_space.shutil, "disk_usage", lambda p: Usage(0, 0, GIB // 2))
    venv = tmp_path / ".venv"
    rc = check_free_space.main(["--need-gb", "7", "--what", "installing torch", str(venv)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "installing torch needs about 7 GiB free at " + str(venv) in err
    assert "only 0.5 GiB is free" in err
    assert "VENV=" in err and "TMPDIR=" in err


def test_main_passes_when_there_is_room(tmp_path, capsys):
    assert check_free_space.main(["--need-gb", "0", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [[], ["--need-gb", "x"]])
def test_main_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exc:
        check_free_space.main(argv)
    assert exc.value.code == 2
