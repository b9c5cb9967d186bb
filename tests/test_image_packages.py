"""The service starts and documents itself without the packages the image leaves out.

The Dockerfile installs the locked dependencies less a few (`--no-install-package`) that their packages'
metadata require but the service never imports. That is only true until a change makes one of them needed at
start-up (Litestar imports polyfactory as soon as a documented response asks for generated examples), and the
image test that would show it is slow. So the default suite starts the app in a Python that cannot import them.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from tests.tiny_bundle import write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = re.findall(r"--no-install-package ([A-Za-z0-9._-]+)", (REPO / "Dockerfile").read_text())

# In a fresh interpreter: refuse every module of the left-out distributions, start the app (its lifespan and the
# OpenAPI schema, which Litestar builds on the first request for it) and fetch what a client first asks.
SERVICE_WITHOUT = """
import sys
from pathlib import Path

REFUSED = set(sys.argv[2].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (the image leaves it out)", name=name)

sys.meta_path.insert(0, Refuse())
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings

with TestClient(create_app(Settings(bundle=Path(sys.argv[1])))) as client:
    for path in ("/schema/openapi.json", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:500])
print("served")
"""


def modules_of(distributions: list[str]) -> set[str]:
    """The top-level modules those distributions install (orbax-checkpoint: orbax)."""
    return {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        for owner in owners
        if owner.lower().replace("_", "-") in distributions
    }


def test_the_dockerfile_leaves_out_packages_that_are_installed_here():
    assert {"polyfactory", "optax", "scipy"} <= set(LEFT_OUT)
    assert all(modules_of([name]) for name in LEFT_OUT), "a --no-install-package name matches no installed package"


def test_the_service_starts_without_the_packages_the_image_leaves_out(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "export")
    refused = ",".join(sorted(modules_of(LEFT_OUT)))
    run = subprocess.run(
        [sys.executable, "-c", SERVICE_WITHOUT, str(bundle), refused],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0 and "served" in run.stdout, run.stderr[-3000:]
