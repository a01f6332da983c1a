"""`unetkit data patches` and `unetkit data inspect` from the command line."""

from pathlib import Path

import pytest

from unetkit.cli import main


def test_data_patches_and_inspect(tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 4 pairs of 32x32 images -> 2x2 patches of 16 each
    assert main(["data", "patches", str(tiny_dataset), str(tmp_path / "p"), "--size", "16"]) == 0
    assert "16 patch(es)" in capsys.readouterr().out
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 16
    assert (tmp_path / "p" / "images" / "img_0_y16_x0.png").is_file()
    assert main(["data", "inspect", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "encoding: binary" in out and "16 paired" in out


def test_data_patches_bad_size_is_one_line(tmp_path: Path, tiny_dataset: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "patches", str(tiny_dataset), str(tmp_path / "p"), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetkit: error:") and err.count("\n") == 1 and "img_0" in err
