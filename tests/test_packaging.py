"""The wheel carries what lives outside the package: cards, reported rows, resources."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("odbench-*.whl")
    return whl


def test_wheel_ships_every_card_and_resource(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, target in (
        ("methods", "odbench/_cards/methods"),
        ("datasets", "odbench/_cards/datasets"),
        ("leaderboard/reported", "odbench/_cards/reported"),
    ):
        cards = sorted((REPO / folder).glob("*.toml"))
        assert cards, folder
        for card in cards:
            assert f"{target}/{card.name}" in names
    assert "odbench/resources/imagenet_coarse.json" in names
    assert not any(n.startswith(("tests/", "leaderboard/results/")) for n in names)


def test_installed_wheel_finds_its_cards(wheel: Path, tmp_path: Path) -> None:
    """Unpacked away from the checkout, the registry is filled from ``odbench/_cards``."""
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = (
        "import odbench.cards as c; from odbench.registry import METHODS, DATASETS;"
        "print(c.card_dir('methods')); print(','.join(METHODS.names()));"
        "print(','.join(DATASETS.names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[0] == str(tmp_path / "site" / "odbench" / "_cards" / "methods")
    assert set(out[1].split(",")) >= {"center-prior", "wctr", "attentioncut", "tokencut"}
    assert set(out[2].split(",")) >= {"ecssd", "toy", "voc07", "coco20k"}


OPENCV_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def test_one_opencv_distribution() -> None:
    """Issue 16 item 15: the OpenCV wheels all install into one ``cv2/`` folder, so two of them
    overwrite each other's files.  odbench depends on the headless build, as pysodmetrics does,
    and the environment holds exactly one OpenCV distribution."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps]
    assert [n for n in names if n in OPENCV_DISTRIBUTIONS] == ["opencv-python-headless"]
    installed = []
    for dist in OPENCV_DISTRIBUTIONS:
        try:
            installed.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    assert len(installed) == 1, f"several OpenCV distributions share cv2/: {installed}"
