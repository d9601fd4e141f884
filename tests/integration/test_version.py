import subprocess
import sys
from pathlib import Path

import pytest

from tasks.support.dvc import DvcError, dvc_track

pytestmark = pytest.mark.integration


def test_dvc_track_versions_data_and_says_when_there_is_no_dvc_repo(tmp_path: Path) -> None:
    (tmp_path / "data" / "videos").mkdir(parents=True)
    (tmp_path / "data" / "videos" / "a.mp4").write_bytes(b"video bytes")
    with pytest.raises(DvcError, match="dvc init"):
        dvc_track(tmp_path, [tmp_path / "data" / "videos"])
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "-q"], cwd=tmp_path, check=True)
    files = dvc_track(tmp_path, [tmp_path / "data" / "videos"])
    assert files == [tmp_path / "data" / "videos.dvc"]
    assert "md5:" in files[0].read_text()
    assert "/videos" in (tmp_path / "data" / ".gitignore").read_text()
