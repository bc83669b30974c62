"""One version everywhere: the extension's ``__version__``, the installed package's metadata and
``ryzq --version``."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

import ryzq

PACKAGE = Path(ryzq.__file__).resolve().parent


def _provides_imported_package(dist: importlib.metadata.Distribution) -> bool:
    """Whether `dist` is the installed distribution of the `ryzq` imported here: a wheel's files
    hold this very `ryzq/__init__.py`; an editable install's `direct_url.json` names the source
    tree that holds it."""
    for file in dist.files or ():
        if file.parts == ("ryzq", "__init__.py"):
            return Path(dist.locate_file(file)).resolve() == PACKAGE / "__init__.py"
    direct_url = dist.read_text("direct_url.json")
    if direct_url is None:
        return False
    url = json.loads(direct_url)
    if not url.get("dir_info", {}).get("editable") or not url["url"].startswith("file:"):
        return False
    tree = Path(url2pathname(urlparse(url["url"]).path)).resolve()
    return PACKAGE.is_relative_to(tree)


def test_the_metadata_has_the_version_of_the_extension():
    providers = [
        dist
        for dist in importlib.metadata.distributions(name="ryzq")
        if _provides_imported_package(dist)
    ]
    if not providers:
        # Imported from a source tree on PYTHONPATH: no metadata describes this code, and that
        # of another ryzq installed beside it would say nothing about it.
        pytest.skip(f"no installed distribution provides the ryzq imported from {PACKAGE}")
    assert [dist.version for dist in providers] == [ryzq.__version__]
    assert importlib.metadata.version("ryzq") == ryzq.__version__


def test_the_command_prints_the_version_of_the_extension(tmp_path):
    # From an empty folder, so that `python -m` finds the same ryzq as this process.
    result = subprocess.run(
        [sys.executable, "-m", "ryzq", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ryzq {ryzq.__version__}\n"
