"""Where metaloco's installed files live: config/, launch/ and models/.

In a source checkout they sit beside the `metaloco/` folder; in a colcon install
they are in the package's share directory (found through the ament index).
"""

from __future__ import annotations

from pathlib import Path


def share_dir() -> Path:
    """The folder holding config/, launch/ and models/.

    Returns:
        The source checkout's root when running from one, else the ament share directory.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "config" / "robots").is_dir():
        return root
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("metaloco"))


def config_dir() -> Path:
    """The config/ folder."""
    return share_dir() / "config"


def models_dir() -> Path:
    """The models/ folder (shipped, trained artifacts)."""
    return share_dir() / "models"


def launch_dir() -> Path:
    """The launch/ folder."""
    return share_dir() / "launch"
