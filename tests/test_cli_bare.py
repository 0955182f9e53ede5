"""On a bare GPU box (torch and numpy only) the measurement command must still start."""

from __future__ import annotations

import json
import sys

from offramp.analysis.cli import COMMANDS, main


def test_missing_dependency_disables_only_the_commands_that_need_it(monkeypatch, capsys):
    for module in list(COMMANDS.values()) + ["offramp.analysis.study.config",
                                              "offramp.analysis.report.tables"]:
        monkeypatch.delitem(sys.modules, module, raising=False)
    for missing in ("rich", "rich.console", "rich.progress", "rich.table", "yaml", "pydantic"):
        monkeypatch.setitem(sys.modules, missing, None)
    assert main(["simulate", "study.yaml", "-o", "out"]) == 2
    err = capsys.readouterr().err
    assert "offramp simulate" in err and "needs the Python package" in err
    assert main(["profile", "list", "--json"]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)]
    assert "fmnist-resnet-cpu" in names
