"""A server loads what it uses: the remote engine's HTTP client and OPA library, and the
STIX library with its pattern grammar and TAXII client (about 40 MB between them), are
imported only by a server that evaluates remotely or shares intel."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("aiohttp", "opa_client", "stix2", "stix2patterns", "taxii2client")


def test_the_app_and_the_cli_import_neither_the_remote_engine_nor_stix() -> None:
    probe = (
        "import sys\n"
        "import controlplane.api.app, controlplane.cli.main, controlplane.runtime\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"imported at start: {loaded}"


def test_building_a_stix_object_imports_the_library_then() -> None:
    probe = (
        "import sys\n"
        "from controlplane.intel.stix.objects import identity\n"
        "assert 'stix2' not in sys.modules\n"
        "print(identity('lab-a')['type'], 'stix2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "identity True"
