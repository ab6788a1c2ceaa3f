"""Atomic writes: the usual permissions, and nothing written on failure."""

import json
import os
import stat

import pytest

from dualalign.utils.atomic import atomic_write_json, atomic_write_text


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_text(str(path), '{"old": true}\n')
    with pytest.raises(ValueError):
        atomic_write_json(str(path), {"bad": float("nan")})  # strict JSON refuses NaN
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left
