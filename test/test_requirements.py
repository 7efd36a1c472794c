"""requirements.txt: the Python dependencies a ROS 2 install does not provide, pinned as scripts/setup.sh pins them;
package.xml points to it."""
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: what setup.sh installs that is not a Python dependency of find_ros for a ROS install: the ROS wheels (a ROS
#: install provides them) and the build tools of this machine's wheel-based set-up
NOT_REQUIREMENTS = re.compile(r"ros-.*|catkin_pkg|colcon-common-extensions")


def _requirements() -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    return [ln for ln in lines if ln]


def _setup_sh_pip_packages() -> list[str]:
    text = (ROOT / "scripts" / "setup.sh").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if '"$PIP" install' in ln and "torch" in ln]
    words = shlex.split(line.split("2>")[0])
    return [w for w in words[words.index("install") + 1:] if not w.startswith("-")]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower()


def test_requirements_are_setup_sh_pins_without_ros_wheels():
    req = _requirements()
    wanted = [p for p in _setup_sh_pip_packages() if not NOT_REQUIREMENTS.fullmatch(p)]
    assert sorted(req) == sorted(wanted), (sorted(set(req) ^ set(wanted)))
    assert "torch==2.13.0" in req and "transformers>=5,<6" in req and "open3d-cpu==0.20.0" in req
    assert not [r for r in req if _name(r).startswith("ros-")]
    assert len({_name(r) for r in req}) == len(req), "a package listed twice"


def test_package_xml_points_to_the_requirements_file():
    text = (ROOT / "package.xml").read_text()
    assert ET.parse(ROOT / "package.xml").getroot().tag == "package"  # still well-formed XML
    assert "pip install -r requirements.txt" in text
    assert "see README" not in text
