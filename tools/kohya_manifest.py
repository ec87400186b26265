"""Write lorabuild/data/kohya_sources.json: the git blob id of each source file of the pinned kohya.

``lorabuild doctor`` and ``lorabuild setup`` use it to verify a kohya checkout that has no git
metadata (a copied folder, an unpacked archive): a file's blob id is the SHA-1 of
``blob <size>\\0<bytes>``, so no git is needed to compare.

    python tools/kohya_manifest.py PATH/TO/sd-scripts-clone [COMMIT]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorabuild import KOHYA_COMMIT  # noqa: E402
from lorabuild.stages.doctor import MANIFEST_PATH, is_source_file  # noqa: E402


def main() -> None:
    clone = Path(sys.argv[1])
    commit = sys.argv[2] if len(sys.argv) > 2 else KOHYA_COMMIT
    listing = subprocess.run(
        ["git", "-C", str(clone), "ls-tree", "-r", commit], check=True, capture_output=True, text=True
    ).stdout
    files = {}
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        _, kind, blob = meta.split()
        if kind == "blob" and is_source_file(path):
            files[path] = blob
    doc = {"commit": commit, "files": dict(sorted(files.items()))}
    MANIFEST_PATH.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {MANIFEST_PATH.relative_to(REPO)}: {len(files)} files of {commit}")


if __name__ == "__main__":
    main()
