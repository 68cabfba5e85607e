"""Registry readiness: pyproject.toml metadata and install by ``git clone``.

The frozen node interface is checked in ``test_node_interface.py``.

pyproject.toml
    ``[project]`` name/version/license/description/requires-python and ``[tool.comfy]`` PublisherId, DisplayName,
    Icon and requires-comfyui, checked with tomllib and with ComfyUI's own parser (``comfy_config``).

Install (slow)
    ``git clone`` of this repository's committed HEAD into a fresh ComfyUI copy's ``custom_nodes/``,
    ``python -m pip install -r requirements.txt`` (a no-op: the pack needs nothing ComfyUI lacks), then a real
    ComfyUI server lists the five nodes from the clone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import NODE_IDS, PACK_FOLDER, comfyui_server

from devtools.comfy_env import comfyui_source_dir, prepare_comfyui_copy

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser as the tomli backport
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------------------------------------------------------------
# pyproject.toml
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def test_project_metadata(pyproject):
    project = pyproject["project"]
    # Comfy Registry node id: lowercase letters, digits, - and _ (the id `comfy node install` takes)
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,99}", project["name"]), project["name"]
    assert project["name"] == "comfyui-magicanimate"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), f"version must be semver X.Y.Z: {project['version']}"
    desc = project["description"]
    assert 20 <= len(desc) <= 300 and "\n" not in desc, desc
    assert "MagicAnimate" in desc and "ComfyUI" in desc
    # GPL-3.0 like ComfyUI: the file it points to is there and is the GPLv3
    license_file = REPO / project["license"]["file"]
    assert license_file.is_file(), license_file
    text = license_file.read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3" in text
    assert (REPO / project["readme"]).is_file()
    # requires-python admits the Python that runs ComfyUI here, and ComfyUI's own floor (3.10)
    spec = project["requires-python"]
    assert re.fullmatch(r">=\s*3\.\d+", spec), spec
    floor = _version_tuple(spec)
    assert floor <= (3, 10) and sys.version_info[:2] >= floor, spec
    # no runtime dependencies, same as requirements.txt (installing must never touch torch & co)
    assert project["dependencies"] == []
    reqs = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    assert [ln for ln in reqs if ln and not ln.startswith("#")] == []
    repo_url = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo_url), repo_url


def test_tool_comfy_section(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip() and "MagicAnimate" in comfy["DisplayName"]
    icon = comfy["Icon"]
    assert isinstance(icon, str) and (icon == "" or re.fullmatch(r"https://\S+\.(png|jpg|jpeg|svg|gif|webp)", icon)), \
        f"Icon must be empty or an https URL of an image: {icon!r}"
    required = comfy["requires-comfyui"]
    assert required == ">=0.3.75", required
    # the ComfyUI the suite runs against satisfies it
    version_file = comfyui_source_dir() / "comfyui_version.py"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    assert match and _version_tuple(match.group(1)) >= _version_tuple(required), match and match.group(1)


def test_comfyui_reads_the_pyproject_like_the_registry(pyproject):
    """ComfyUI's own parser (used when it loads the pack) reads the same name, version and publisher."""
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(REPO))
    assert config is not None
    assert config.project.name == pyproject["project"]["name"]
    assert config.project.version == pyproject["project"]["version"]
    assert config.tool_comfy.publisher_id == pyproject["tool"]["comfy"]["PublisherId"]
    assert config.tool_comfy.display_name == pyproject["tool"]["comfy"]["DisplayName"]
    assert config.project.urls.repository == pyproject["project"]["urls"]["Repository"]


def test_registry_id_matches_workflows_and_readme(pyproject):
    """The UI workflows tag the pack's nodes with ``cnr_id`` = the registry id; the README's install line uses it."""
    name = pyproject["project"]["name"]
    for path in sorted((REPO / "example_workflows").glob("*.json")):
        ui = json.loads(path.read_text(encoding="utf-8"))
        ids = {n["properties"]["cnr_id"] for n in ui["nodes"] if n["type"] in NODE_IDS}
        assert ids == {name}, (path.name, ids)
    assert f"comfy node install {name}" in (REPO / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------------
# Install by git clone (slow)
# ---------------------------------------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


@pytest.mark.slow
def test_git_clone_and_pip_install_on_a_fresh_comfyui(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the git-clone install")
    head = _git("rev-parse", "HEAD", cwd=REPO)
    comfy = prepare_comfyui_copy(tmp_path / "ComfyUI")
    pack = comfy / "custom_nodes" / PACK_FOLDER
    assert not pack.exists()

    # 1. the README's install: git clone into custom_nodes (the committed HEAD of this checkout)
    _git("clone", "--quiet", str(REPO), str(pack), cwd=tmp_path)
    assert _git("rev-parse", "HEAD", cwd=pack) == head
    assert (pack / "__init__.py").is_file() and (pack / "pyproject.toml").is_file()

    # 2. pip install -r requirements.txt in ComfyUI's environment: succeeds and installs nothing
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                          "-r", "requirements.txt"], cwd=pack, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, f"pip install -r requirements.txt failed:\n{pip.stdout}\n{pip.stderr}"
    assert "Successfully installed" not in pip.stdout, pip.stdout

    # 3. ComfyUI starts with the cloned pack and serves its five nodes
    with comfyui_server(tmp_path, comfy_dir=comfy, link_pack=False, label="install") as srv:
        status, info = srv.get("/object_info")
        assert status == 200
        missing = [n for n in NODE_IDS if n not in info]
        assert not missing, f"nodes not registered: {missing}; log:\n{srv.log_tail()}"
        for node_id in NODE_IDS:
            assert info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER}", info[node_id]["python_module"]
            assert info[node_id]["category"] == "MagicAnimate"
        log = srv.log_path.read_text(errors="replace")
        # "Import times for custom nodes:" has one line per pack, "(IMPORT FAILED)" on failure
        timing = [ln for ln in log.splitlines() if "seconds" in ln and ln.rstrip().endswith(f"/{PACK_FOLDER}")]
        assert len(timing) == 1 and "IMPORT FAILED" not in timing[0], srv.log_tail()
        assert "Unable to parse pyproject.toml" not in log, srv.log_tail()
