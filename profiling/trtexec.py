"""Profiles from TensorRT ``trtexec --exportTimes`` files (the layout in :mod:`.imports`'s
docstring): one export per (engine, batch size), listed in a manifest or found by a pattern.
Standard library and numpy only."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from offramp.common.errors import InputError
from offramp.core.modes import StageKind

from .format import KINDS, LatencyProfile
from .imports import _key, _meta, _read_csv, _row, finish

TRT_COMPUTE = "computeMs"
TRT_H2D = ("h2dMs", "inMs")  # TensorRT 10, then older releases


def read_trtexec_times(path: str | Path) -> tuple[list[float], list[float] | None]:
    """(per-iteration GPU compute ms, per-iteration host-to-device ms or None) of one
    ``trtexec --exportTimes`` file, checked against its documented layout."""
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError(src, None, "no such file" if not path.exists() else "is not a file",
                         "check the manifest or the pattern")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(src, None, f"not valid JSON ({exc})",
                         "pass the file trtexec --exportTimes=FILE wrote") from None
    if not isinstance(doc, list) or not doc:
        raise InputError(src, None, "must be a non-empty list of per-iteration records",
                         "pass the file trtexec --exportTimes=FILE wrote")
    compute, h2d = [], []
    last_start = -math.inf
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise InputError(src, f"[{i}]", "must be a record of timings", "re-export it")
        value = rec.get(TRT_COMPUTE)
        if value is None and "startComputeMs" in rec and "endComputeMs" in rec:
            value = rec["endComputeMs"] - rec["startComputeMs"]
        if value is None:
            raise InputError(src, f"[{i}].{TRT_COMPUTE}", "missing (and no startComputeMs/"
                             "endComputeMs)", "export with trtexec --exportTimes")
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value <= 0:
            raise InputError(src, f"[{i}].{TRT_COMPUTE}", f"must be a time > 0 ms, got "
                             f"{value!r}", "re-export it")
        start = rec.get("startComputeMs")
        if start is not None:
            if not isinstance(start, (int, float)) or not math.isfinite(start) or start < last_start:
                raise InputError(src, f"[{i}].startComputeMs", f"{start!r} comes before the "
                                 f"previous iteration's ({last_start}): timestamps must not go "
                                 "back", "pass the file as trtexec wrote it")
            end = rec.get("endComputeMs")
            if isinstance(end, (int, float)) and end < start:
                raise InputError(src, f"[{i}].endComputeMs", "ends before it starts",
                                 "pass the file as trtexec wrote it")
            last_start = start
        compute.append(float(value))
        copy = next((rec[k] for k in TRT_H2D if k in rec), None)
        if copy is not None:
            if not isinstance(copy, (int, float)) or not math.isfinite(copy) or copy < 0:
                raise InputError(src, f"[{i}].h2dMs", f"must be a time >= 0 ms, got {copy!r}",
                                 "re-export it")
            h2d.append(float(copy))
    return compute, (h2d if len(h2d) == len(compute) else None)


def trtexec_files(manifest: str | Path | None = None, folder: str | Path | None = None,
                  pattern: str | None = None) -> list[tuple[str, int, int, Path]]:
    """(kind, k, batch, file) of each trtexec export: from a manifest CSV (``kind,k,batch,
    file``, paths relative to it) or from ``folder`` files matching ``pattern``."""
    if manifest is not None:
        path = Path(manifest)
        out = []
        for line, r in enumerate(_read_csv(path), start=2):
            if "file" not in r:
                raise InputError(path, "file", "column missing", "columns: kind,k,batch,file")
            out.append((*_key(r, str(path), line), path.parent / r["file"].strip()))
        if not out:
            raise InputError(path, None, "lists no files", "one row per (kind, k, batch)")
        return out
    if folder is None or pattern is None:
        raise InputError("--trtexec", None, "needs a manifest, or a folder and --pattern",
                         "e.g. --pattern '{kind}{k}_b{batch}.json'")
    if "{k}" not in pattern or "{batch}" not in pattern:
        raise InputError("--pattern", None, f"{pattern!r} needs {{k}} and {{batch}}",
                         "e.g. '{kind}{k}_b{batch}.json' or 'segment{k}_b{batch}.json'")
    regex = re.escape(pattern)
    for name, group in (("kind", r"(?P<kind>[a-z]+)"), ("k", r"(?P<k>\d+)"),
                        ("batch", r"(?P<batch>\d+)")):
        regex = regex.replace(re.escape("{" + name + "}"), group)
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, None, "is not a folder", "pass the folder of trtexec exports")
    out = []
    for p in sorted(folder.iterdir()):
        m = re.fullmatch(regex, p.name)
        if m:
            kind = m.groupdict().get("kind") or "segment"
            if kind not in KINDS:
                raise InputError(p, "kind", f"{kind!r} (from the file name) is not one of "
                                 f"{KINDS}", "rename the file or fix --pattern")
            out.append((kind, int(m["k"]), int(m["batch"]), p))
    if not out:
        raise InputError(folder, None, f"no file matches {pattern!r}", "check --pattern")
    return out


def profile_from_trtexec(files: list[tuple[str, int, int, Path]], model_id: str, n_exits: int,
                         device: str, precision: str = "unknown", h2d: bool = False,
                         source: str = "trtexec") -> LatencyProfile:
    """A profile from trtexec exports (see :func:`trtexec_files`); ``h2d``: the host-to-
    device copy of segment 0 becomes the per-batch ``overhead`` stage."""
    return finish(*trtexec_part(files, model_id, n_exits, device, precision, h2d, source))


def trtexec_part(files: list[tuple[str, int, int, Path]], model_id: str, n_exits: int,
                 device: str, precision: str = "unknown", h2d: bool = False,
                 source: str = "trtexec") -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """(rows, meta, source) of trtexec exports, before the profile as a whole is checked."""
    rows, seen, copies = [], set(), {}
    for kind, k, batch, path in files:
        if (kind, k, batch) in seen:
            raise InputError(path, None, f"a second file for {kind} {k} at batch {batch}",
                             "one export per (engine, batch size)")
        seen.add((kind, k, batch))
        compute, copy = read_trtexec_times(path)
        rows.append(_row(kind, k, batch, compute))
        if StageKind(kind) is StageKind.SEGMENT and k == 0:
            copies[batch] = (copy, path)
    if h2d:
        if not copies:
            raise InputError(source, "h2d", "no segment 0 exports to take the copy from",
                             "export segment 0 too, or drop --h2d")
        for batch, (copy, path) in sorted(copies.items()):
            if copy is None:
                raise InputError(path, "h2dMs", "missing in some iterations",
                                 "export with a trtexec that writes h2dMs, or drop --h2d")
            rows.append(_row("overhead", 0, batch, copy))
    meta = _meta(model_id, n_exits, device, "tensorrt (trtexec)", precision, source,
                 {"format": "trtexec --exportTimes", "files": len(files),
                  "h2d_as_overhead": h2d, "stage_time": "GPU compute per iteration"})
    return rows, meta, source
