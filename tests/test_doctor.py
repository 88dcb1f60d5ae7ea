# `zwalk doctor` on lab hosts: a healthy host, and one whose interface cannot multicast.
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labnodes import LabNode, short_tmp
from netlab import Lab, ip


@pytest.fixture
def base() -> Iterator[Path]:
    yield from short_tmp()


def checks(node: LabNode) -> tuple[int, dict[str, dict[str, str]]]:
    r = node.zwalk("doctor", "--json")
    doc = json.loads(r.stdout)
    return r.returncode, {c["name"]: c for c in doc["checks"]}


def test_doctor_on_a_healthy_lan(lab: Callable[[int], Lab], base: Path) -> None:
    net = lab(3)
    serving = LabNode(net, 1, base, files={"x": b"x"}).start()
    code, c = checks(LabNode(net, 0, base))
    assert code == 0
    assert c["interfaces"]["level"] == "ok" and "eth0" in c["interfaces"]["detail"]
    assert c["mDNS on eth0"]["level"] == "ok"
    assert c["zwalk nodes"]["level"] == "ok" and c["zwalk nodes"]["detail"].startswith("1 ")
    assert c["node port"]["level"] == "ok"
    text = LabNode(net, 0, base).zwalk("doctor").stdout.splitlines()
    levels = [line for line in text if not line.startswith(" ")]
    assert levels and all(line[:7] in ("ok     ", "warning", "problem") for line in levels)
    assert all(line[7:9] == "  " and line[9] != " " for line in levels)  # one level column
    code, c = checks(serving)
    assert code == 0 and c["local node"]["level"] == "ok" and "pid" in c["local node"]["detail"]
    assert c["zwalk nodes"]["level"] == "warning"  # itself does not count


def test_doctor_names_an_interface_without_multicast(lab: Callable[[int], Lab], base: Path) -> None:
    net = lab(2)
    ip("link", "set", "eth0", "multicast", "off", ns=net.hosts[0].ns)
    code, c = checks(LabNode(net, 0, base))
    assert code == 1
    assert c["multicast on eth0"]["level"] == "problem"
    assert "ip link set eth0 multicast on" in c["multicast on eth0"]["advice"]
