"""Paths named in data files cannot leave the dataset folder unless the user allows it."""

from __future__ import annotations

import pytest

from tlcore import DataError, inside_root


@pytest.fixture
def root(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "a.dcm").write_bytes(b"x")
    (tmp_path / "secret").write_text("no")
    (tmp_path / "data" / "link").symlink_to(tmp_path / "secret")
    (tmp_path / "data" / "inner").symlink_to(tmp_path / "data" / "sub" / "a.dcm")
    return tmp_path / "data"


@pytest.mark.parametrize("ref", ["sub/a.dcm", "sub/../sub/a.dcm", "inner", "missing.dcm"])
def test_references_inside_the_root_are_kept(root, ref):
    assert inside_root(root, ref, where="m.csv line 2") == root / ref


def test_absolute_reference_inside_the_root_is_kept(root):
    assert inside_root(root, root / "sub" / "a.dcm", where="w") == root / "sub" / "a.dcm"


@pytest.mark.parametrize("ref, how", [("../secret", "'..'"), ("link", "symlink"), ("/etc/passwd", "absolute")])
def test_references_outside_the_root_are_refused(root, ref, how):
    with pytest.raises(DataError) as info:
        inside_root(root, ref, where="m.csv line 7")
    message = info.value.render()
    assert how in message and "m.csv line 7" in message and "data.allow_outside_root=true" in message


def test_the_user_can_allow_outside_references(root):
    assert inside_root(root, "../secret", where="w", allow_outside=True).resolve() == root.parent / "secret"
