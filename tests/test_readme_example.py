"""The README's ten-minute daemon guide: its example must run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from supervisor.daemon import Daemon
from supervisor.plugins import contract_problem
from tests.harness import running_kernel

README = Path(__file__).parent.parent / "README.md"


def example_daemon(monkeypatch) -> type[Daemon]:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code, "README.md has a python example"
    module = types.ModuleType("readme_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # pydantic resolves annotations through it
    exec(compile(code.group(1), "README.md", "exec"), module.__dict__)
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Daemon) and v is not Daemon]
    assert len(classes) == 1
    return classes[0]


async def test_the_readme_example_daemon_runs(tmp_path, monkeypatch):
    cls = example_daemon(monkeypatch)
    assert contract_problem(cls) is None
    folder = tmp_path / "downloads"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mkv", "b.mp4", "sub/c.mkv"):
        (folder / name).write_bytes(b"x")
    async with running_kernel([cls], tmp_path, daemons={cls.name: {"folder": str(folder)}}) as kernel:
        await kernel.supervisor.start(cls.name)
        await kernel.until(lambda: kernel.supervisor.runner(cls.name).status.message == f"3 files in {folder}")
