"""The conformance suite that ``pytest --model PATH_OR_ID`` runs: one test per check, per model template.

Its node ids are relative to this folder wherever templatecheck is installed
(``test_tokenizer.py::test_double_bos[model:default]``): :func:`node_id` reads a suite file or node id the user
gives back, :func:`selects` says whether it names an item, and :func:`run_root` keeps the run's rootdir out
of the model directories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from templatecheck.errors import TemplatecheckError

FOLDER = Path(__file__).parent


def node_id(arg: str, here: Path) -> str:
    """A suite file or node id as given on the command line (relative to the suite, or with the path of the
    installed suite; relative paths from ``here``), relative to the suite folder."""
    path, sep, rest = arg.partition("::")
    full = (here / path).resolve()
    if full == FOLDER or FOLDER in full.parents:
        return full.relative_to(FOLDER).as_posix() + sep + rest
    if path and (FOLDER / path).is_file():
        return Path(path).as_posix() + sep + rest
    files = ", ".join(sorted(p.name for p in FOLDER.glob("test_*.py")))
    raise TemplatecheckError(
        f"{arg!r}: a --model run collects only the conformance suite; name one of its files ({files}) or a "
        "node id it printed, or run your own tests without --model"
    )


def selects(chosen: str, path: Path, name: str) -> bool:
    """Whether ``chosen`` (from :func:`node_id`) names the suite item ``name`` of the file ``path``."""
    if FOLDER not in path.parents:
        return False
    key = f"{path.relative_to(FOLDER).as_posix()}::{name}"
    chosen = chosen.removeprefix("./")
    return chosen in ("", ".") or key == chosen or key.startswith((chosen + "::", chosen + "["))


def holds(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it."""
    return folder == path or folder in path.parents


def run_root(root: Path, inipath: Path | None, here: Path, models: list[Path]) -> Path:
    """The rootdir of a ``--model`` run started in ``here``, given the ``root`` and ``inipath`` pytest chose:
    pytest's when it is ``here`` or the project folder above it (it holds the ini-file or a setup.py); else
    ``here``; the suite's own folder when ``here`` is inside one of the ``models`` (then nothing is cached)."""
    if any(holds(m, here) for m in models):
        return FOLDER
    project = (inipath is not None and inipath.parent == root) or (root / "setup.py").is_file()
    inside = any(holds(m, root) for m in models)
    return root if root == here or (root in here.parents and project and not inside) else here


__all__ = ["FOLDER", "holds", "node_id", "run_root", "selects"]


def model_of(node: str) -> str:
    """The model an item of the suite tests, from its node id (``...::test_x[model:template]``)."""
    target = template_of(node)
    return target.rpartition(":")[0] if target != node else node


def model_scheduler(config: Any, log: Any) -> Any:
    """Under pytest-xdist (``-n``) with its default distribution: a scheduler that keeps together the items that
    share work, from what the workers collected. With at least as many models as workers, every item of one
    model goes to one worker, so each worker loads only its models' tokenizers; with fewer (one model and a
    folder of templates), every item of one template does, as a template's checks share its renders and what
    was learnt of it: the templates spread over the workers and none is learnt twice. One template alone:
    its items spread, as xdist's own scheduler spreads them."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Together(LoadScopeScheduling):  # type: ignore[misc]
        split: Callable[[str], str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.split is None:
                collected: Sequence[str] = next(iter(self.registered_collections.values()), [])
                self.split = scope_of(collected, self.numnodes)
            return self.split(nodeid)

    return Together(config, log)


def scope_of(collected: Sequence[str], workers: int) -> Callable[[str], str]:
    """What keeps the items of a run together (see :func:`model_scheduler`): the model, the template, or the
    item itself."""
    if len({model_of(node) for node in collected}) >= max(2, workers):
        return model_of
    if len({template_of(node) for node in collected}) >= 2:
        return template_of
    return str


def template_of(node: str) -> str:
    """The model and template an item of the suite tests, from its node id (``...::test_x[model:template]``)."""
    inside = node.rpartition("[")[2]
    return inside[:-1] if inside.endswith("]") and ":" in inside else node
