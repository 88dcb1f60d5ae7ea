from __future__ import annotations

from pathlib import Path

from zwalk.store.downloads import MAX_LOCAL_NAME, local_name, part_path


def test_windows_names_are_mapped() -> None:
    assert local_name("a:b?.txt", windows=True) == "a_b_.txt"
    assert local_name("CON.txt", windows=True) == "_CON.txt"
    assert local_name("trailing. ", windows=True) == "trailing"
    assert local_name("a:b", windows=False) == "a:b"


def test_long_names_keep_their_extension_and_fit() -> None:
    name = "é" * 200 + ".iso"
    local = local_name(name)
    assert local.endswith(".iso") and len(local.encode()) <= MAX_LOCAL_NAME
    part = part_path(Path("/x"), name, b"\1" * 32)
    assert len(part.name.encode()) <= 255
