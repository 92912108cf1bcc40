"""What the CWL and WDL runner tests share: the workflows, their expected contents, and a way to
compare two runs' outputs by what the files hold rather than where they were written.

``toil-cwl-runner`` prints a CWL output object (``File`` objects with a ``location`` and a
``path``); ``toil-wdl-runner`` prints a JSON object whose ``File`` values are paths under its
``--outputDirectory``, in directories with temporary names. :func:`canonical_outputs` turns
either into the same structure with every file replaced by the SHA-256 of its contents, so a
run under Mesos and one under ``single_machine`` compare equal exactly when they produced the
same values and the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKFLOWS = Path(__file__).resolve().parent / "workflows"
#: The scatter's names, as in both workflows' inputs.
NAMES = ("ada", "grace", "barbara")

#: What the CWL workflow's files must hold: JavaScript upper-cased the name and the shell
#: pipeline turned "!" into "."; uniq counted the sorted words; the secondary file came first.
CWL_EXPECTED = {
    "greetings": [f"Hello {name.upper()}.\n" for name in NAMES],
    "counts": "      2 apple\n      1 fig\n      3 pear\n",
    "lookup": "index of table.txt\nrow1\nrow2\n",
}
#: What the WDL workflow's files must hold: one greeting per branch, then all of them.
WDL_EXPECTED = {
    "greetings.greetings": [f"Hello {name}, 6 words\n" for name in NAMES],
    "greetings.all": "".join(f"Hello {name}, 6 words\n" for name in NAMES),
    "greetings.count": 3,
}


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_outputs(document: Any, read: Callable[[str], bytes], outdir: str) -> Any:
    """*document* with each output file replaced by the digest of its contents.

    A CWL ``File`` keeps its ``basename`` (which the workflow chose) and its secondary files;
    a WDL file is any string naming a path under *outdir*. *read* returns a file's bytes.
    """
    if isinstance(document, dict):
        if document.get("class") == "File":
            return {
                "basename": document["basename"],
                "contents": sha256_of(read(_cwl_path(document))),
                "secondaryFiles": [canonical_outputs(s, read, outdir)
                                   for s in document.get("secondaryFiles", [])],
            }
        return {key: canonical_outputs(value, read, outdir) for key, value in document.items()}
    if isinstance(document, list):
        return [canonical_outputs(item, read, outdir) for item in document]
    if isinstance(document, str) and document.startswith(outdir.rstrip("/") + "/"):
        return sha256_of(read(document))
    return document


def expected_canonical(expected: dict[str, Any]) -> dict[str, Any]:
    """The digests that :func:`canonical_outputs` must give for the contents in *expected*."""
    def digest(value: Any) -> Any:
        if isinstance(value, list):
            return [digest(v) for v in value]
        return sha256_of(value.encode()) if isinstance(value, str) else value
    return {key: digest(value) for key, value in expected.items()}


def contents_only(canonical: Any) -> Any:
    """A canonical CWL output with only the digests, to check against :func:`expected_canonical`."""
    if isinstance(canonical, dict) and "contents" in canonical:
        return canonical["contents"]
    if isinstance(canonical, dict):
        return {key: contents_only(value) for key, value in canonical.items()}
    if isinstance(canonical, list):
        return [contents_only(item) for item in canonical]
    return canonical


def _cwl_path(file: dict[str, Any]) -> str:
    if "path" in file:
        return str(file["path"])
    location = str(file["location"])
    if not location.startswith("file://"):
        raise AssertionError(f"an output that is not a local file: {location}")
    return location[len("file://"):]
