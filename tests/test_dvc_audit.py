"""dvc.yaml against what the stages really do: each stage's command runs under ``strace`` on the sample data and
every project file it opens (data and Python modules) must be a declared dep or out; every declared dep must be
opened. Otherwise ``dvc repro`` can skip a stage whose input changed, or re-run one for a file it never reads.

What counts:

- Data: every file under the project the command opens or probes (``openat``; ``stat`` of a file, so an optional
  input that is absent still counts) must lie in a declared dep or out (a folder covers its files). Writes go
  through staging names (``.publish-*/``, ``.name.*.tmp``; see curation/io.py): they count as the final path.
  Reading one of its own outputs in place (an earlier run's) is an input DVC does not know of.
- Modules: every ``.py`` under curation/, schemas/ and augment/ the command imports must be declared, except the
  CLI shell (what ``import curation.cli`` loads for every command alike: the other commands' modules); of the shell,
  the stage's own command module, curation/io.py and schemas/ must be declared all the same.
- Not inputs: params.yaml (DVC tracks it through ``params``), dvc.yaml, and the pre-label cache
  (``prelabel.cache_dir``: embeddings keyed by image content and model, so it changes speed, never results).

pull and push need Label Studio; fiftyone needs the FiftyOne database. They are checked statically here (their
``cmd`` names every data dep and out) but not run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from curation.io import PUBLISHING

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CODE = ("curation", "schemas", "augment")
RUN_ORDER = ["ingest", "prelabel", "agreement", "refine", "split", "augment", "export", "health"]
NOT_RUN = {"pull": "needs Label Studio", "push": "needs Label Studio", "fiftyone": "needs the FiftyOne database"}
STRACE = shutil.which("strace")


def _strace_problem() -> str | None:
    """Why strace cannot trace here (not installed, or ptrace refused, as in some containers), or None."""
    if STRACE is None:
        return "no strace (`make test` installs it when root; else apt-get install strace)"
    done = subprocess.run([STRACE, "-o", os.devnull, "true"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"strace cannot trace here: {done.stderr.strip()[:200]}"


def _interpolate(text: str, params: dict) -> str:
    def value(match: re.Match[str]) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _entries(items: list) -> list[str]:
    return [next(iter(item)) if isinstance(item, dict) else item for item in items or []]


def load_stages(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages with ``${...}`` filled from params.yaml: cmd, deps, outs (outs + metrics + plots)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    pipeline = yaml.safe_load(_interpolate((root / "dvc.yaml").read_text(), params))
    stages = pipeline["stages"]
    return {
        name: {
            "cmd": " ".join(stage["cmd"].split()),
            "deps": [p.rstrip("/") for p in _entries(stage.get("deps"))],
            "outs": [p.rstrip("/") for key in ("outs", "metrics", "plots") for p in _entries(stage.get(key))],
        }
        for name, stage in stages.items()
    }


def top_level_plots(root: Path) -> list[str]:
    """dvc.yaml's top-level plot files: written by a stage only when they have rows, so not outs; never inputs."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    return _entries(yaml.safe_load(_interpolate((root / "dvc.yaml").read_text(), params)).get("plots"))


def _is_code(path: str) -> bool:
    return path.split("/")[0] in CODE


IMAGE_READERS = ("prelabel", "refine", "augment", "export")  # open the raw images through the manifest's paths


def implicit_deps(root: Path) -> dict[tuple[str, str], str]:
    """Deps a command reads without naming them on its command line, and why each cannot be named there."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    previous = Path(params["split"]["previous"])
    implicit = {(name, params["ingest"]["raw_dir"]): "the raw images the manifest lists" for name in IMAGE_READERS}
    # split.previous exists only after the first release, and DVC needs every dep to exist: its folder is the dep
    implicit[("split", previous.parent.as_posix())] = f"split.previous ({previous}), pinned when present"
    return implicit


def test_every_cmd_names_its_data_deps_and_outputs() -> None:
    """Static: the data paths a stage declares appear in its command (as the path or its folder)."""
    problems = []
    implicit = implicit_deps(ROOT)
    for name, stage in load_stages(ROOT).items():
        words = set(stage["cmd"].split())
        for path in stage["deps"] + stage["outs"]:
            if _is_code(path) or path in words or (name, path) in implicit:
                continue
            if not any(path.startswith(word.rstrip("/") + "/") for word in words if "/" in word):
                problems.append(f"{name}: {path} is declared but its command does not name it")
    assert not problems, "\n".join(problems)


def test_every_stage_declares_its_command_module_io_and_schemas() -> None:
    """Static, so the stages not run below are held to it too (pull has no deps: it always runs)."""
    problems = []
    for name, stage in load_stages(ROOT).items():
        if name == "pull":
            continue
        for module in (_command_module(stage["cmd"]), "curation/io.py", "schemas/params.py"):
            if not _covered(module, stage["deps"]):
                problems.append(f"{name}: does not declare {module}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- runtime audit

# a path syscall on a path: absolute, or relative to the working folder (one relative to another descriptor is a
# walk inside a folder already seen, such as export's per-split parts)
_CALL = re.compile(r'^\d+\s+(openat|open|stat|lstat|newfstatat|statx|access|faccessat2?)\((?:AT_FDCWD, )?"([^"]+)"')
TRACED = "openat,open,stat,lstat,newfstatat,statx,access,faccessat2"
_STAGING = re.compile(r"/\.(?:publish-|parts\.)[^/]+")  # io.publish's staging; export's per-split parts
_TMP = re.compile(r"^\.(.+)\.[^./]+\.tmp$")


def _final_path(path: str) -> str:
    """A staging or temporary name as the output it becomes."""
    path = _STAGING.sub("", path)
    head, _, base = path.rpartition("/")
    tmp = _TMP.match(base)
    return f"{head}/{tmp.group(1)}" if tmp and head else path


def accessed(log: Path, project: Path) -> tuple[set[str], set[str]]:
    """Project-relative files the traced command opened or probed (directories and outside paths dropped), and
    those of them it read in place: opened read-only under their final name, not a staging one."""
    found, reads = set(), set()
    prefix = str(project.resolve()) + "/"
    for line in log.read_text(errors="replace").splitlines():
        match = _CALL.match(line)
        if not match:
            continue
        path = match.group(2)
        if "= -1 " in line and "ENOENT" not in line:
            continue  # e.g. ENOTDIR: not a file the command could read
        path = path[len(prefix) :] if path.startswith(prefix) else path
        if path.startswith("/") or path.startswith(".."):
            continue
        path = os.path.normpath(path)
        final = _final_path(path)
        in_place = line.split("(", 1)[0].endswith("openat") and "= -1 " not in line and final == path
        if in_place and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", line):
            reads.add(path)
        path = final
        if (project / path).is_dir() or "__pycache__" in path or path.endswith(PUBLISHING):
            continue  # folders themselves; io's in-progress marker, probed by check_published in every input folder
        if "ENOENT" in line and (_is_code(path) or "/" not in path):
            continue  # the import system probing for modules that live elsewhere
        if "ENOENT" in line and re.search(r"(^|/)glibc-hwcaps/|\.so(\.[\d.]+)?$", path):
            continue  # the dynamic loader probing a library search path that is relative (empty RPATH entries)
        found.add(path)
    return found, reads & found


def _covered(path: str, declared: list[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in declared)


def _shell_modules(project: Path, env: dict[str, str]) -> set[str]:
    code = (
        "import sys, curation.cli\n"
        "print('\\n'.join(m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True)
    prefix = str(project.resolve()) + "/"
    return {f[len(prefix) :] for f in out.stdout.split() if f.startswith(prefix)}


def _command_module(stage_cmd: str) -> str:
    from curation.cli import app

    name = stage_cmd.split()[1]
    for info in app.registered_commands:
        if (info.name or info.callback.__name__) == name:
            return info.callback.__module__.replace(".", "/") + ".py"
    raise AssertionError(f"no command {name}")


def audit(
    name: str, stage: dict, traced: tuple[set[str], set[str]], shell: set[str], params: dict, plots: list[str]
) -> list[str]:
    """The stage's disagreements between dvc.yaml and what it opened, one line each."""
    opened, reads = traced
    declared = stage["deps"] + stage["outs"] + [p for p in plots if p.startswith(f"data/{name}/")]
    cache_dir = params["prelabel"]["cache_dir"]
    # model ids are tried as local folders first; in params.yaml they are hub ids (from the HF cache, outside)
    models = {params["prelabel"]["clip"]["model"], params["prelabel"]["captions"]["model"]}
    ignored = {"params.yaml", "dvc.yaml", "dvc.lock"} | models
    required_shell = {_command_module(stage["cmd"]), "curation/io.py"} | {p for p in shell if p.startswith("schemas/")}
    problems = []
    for path in sorted(opened - ignored):
        if _covered(path, [cache_dir]) and name in {"prelabel", "refine"}:
            continue
        if _is_code(path) and path in shell and path not in required_shell:
            continue
        if not _covered(path, declared):
            problems.append(f"{name}: opens {path}, not a declared dep or out")
    for path in sorted(reads):
        if _covered(path, declared) and not _covered(path, stage["deps"]) and not _is_code(path):
            problems.append(f"{name}: reads {path}, its own earlier output: an input DVC does not know of")
    for path in sorted(set(required_shell) - opened):
        problems.append(f"{name}: audit cannot see {path} imported (is the trace complete?)")
    for dep in stage["deps"]:
        if not any(_covered(path, [dep]) for path in opened):
            problems.append(f"{name}: declares dep {dep}, which its command never opens")
    return problems


def _annotations(project: Path) -> None:
    """Three agreeing reviewers on every image with a ground truth: what pull would write after a review round."""
    manifest = pd.read_parquet(project / "data/ingest/manifest.parquet")
    truth = pd.read_csv(project / "data/sample/truth.csv")
    key = truth.columns[0]
    manifest["name"] = manifest["path"].map(lambda p: Path(p).name)
    truth["name"] = truth[key].map(lambda p: Path(p).name)
    joined = manifest.merge(truth[["name", "label"]], on="name").drop_duplicates("image_id")
    rows = [
        {"image_id": image_id, "annotator": who, "label": label}
        for image_id, label in zip(joined["image_id"], joined["label"], strict=True)
        for who in ("a@example.com", "b@example.com", "c@example.com")
    ]
    (project / "data/pull").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(project / "data/pull/annotations.parquet")


@pytest.mark.slow  # eight stages on a small sample under strace: about a minute
def test_stages_open_exactly_what_dvc_yaml_declares(tmp_path) -> None:
    if problem := _strace_problem():
        pytest.skip(problem)
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", *CODE, "releases"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, project / name)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project),  # the copied code runs, so its module files are the ones opened
        "PYTHONDONTWRITEBYTECODE": "1",  # and opened as .py: no __pycache__ stands in for them
        "HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "TORCH_HOME"):
        if var in os.environ:
            env[var] = os.environ[var]
    subprocess.run(
        [str(BIN / "curation"), "sample-data", "data/sample", "--n-per-class", "4"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    stages = load_stages(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    shell = _shell_modules(project, env)
    plots = top_level_plots(project)
    problems = []
    for name in RUN_ORDER:
        if name == "refine":  # an empty cache: refine must get its embeddings from what it declares
            shutil.rmtree(project / params["prelabel"]["cache_dir"])
        log = tmp_path / f"{name}.strace"
        done = subprocess.run(
            [str(STRACE), "-f", "-qq", "-o", str(log), "-e", f"trace={TRACED}", "sh", "-c", stages[name]["cmd"]],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{name} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        problems += audit(name, stages[name], accessed(log, project), shell, params, plots)
        if name == "ingest":
            _annotations(project)
    assert set(stages) == set(RUN_ORDER) | set(NOT_RUN), "a stage is neither audited nor listed in NOT_RUN"
    assert not problems, "\n".join(problems)


def test_browse_input_defaults_are_the_paths_params_yaml_gives() -> None:
    """The schema's defaults (used when params.yaml leaves a path out) match the pipeline's own paths."""
    from schemas.params_browse import BrowseInputPaths

    written = yaml.safe_load((ROOT / "params.yaml").read_text())["browse"]["inputs"]
    defaults = {name: Path(value).as_posix() for name, value in BrowseInputPaths().model_dump().items()}
    assert defaults == written


def test_audit_reads_strace_lines_and_names_each_disagreement(tmp_path) -> None:
    """The parser and the rules on a hand-written trace (strace's own line format), so the audit can fail."""
    project = tmp_path / "project"
    (project / "data/in").mkdir(parents=True)
    (project / "data/out").mkdir(parents=True)
    (project / "data/in/a.parquet").write_bytes(b"")
    (project / "data/out/b.parquet").write_bytes(b"")
    log = tmp_path / "trace"
    log.write_text(
        f'7 openat(AT_FDCWD, "{project}/data/in/a.parquet", O_RDONLY|O_CLOEXEC) = 3\n'
        '7 openat(AT_FDCWD, "data/out/.publish-7-new-x/.b.parquet.q1.tmp", O_RDWR|O_CREAT|O_EXCL, 0600) = 4\n'
        '7 openat(AT_FDCWD, "data/out/b.parquet", O_RDONLY|O_CLOEXEC) = 5\n'
        '7 newfstatat(AT_FDCWD, "releases/splits.parquet", 0x7ffd, 0) = -1 ENOENT (No such file or directory)\n'
        '7 openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY) = 6\n'
        '7 openat(AT_FDCWD, "glibc-hwcaps/x86-64-v2/libarrow.so.2600", O_RDONLY) = -1 ENOENT (No such file)\n'
        '7 openat(AT_FDCWD, "data/in/.publishing.json", O_RDONLY) = -1 ENOENT (No such file or directory)\n'
    )
    opened, reads = accessed(log, project)
    assert opened == {"data/in/a.parquet", "data/out/b.parquet", "releases/splits.parquet"}
    assert reads == {"data/in/a.parquet", "data/out/b.parquet"}
    stage = {
        "cmd": "curation split data/in/a.parquet data/out",
        "deps": ["data/in/a.parquet", "data/unused.csv", "curation/split_cli.py", "curation/io.py", "schemas"],
        "outs": ["data/out/b.parquet"],
    }
    params = {"prelabel": {"cache_dir": ".cache/prelabel", "clip": {"model": "m"}, "captions": {"model": "c"}}}
    schemas = {"schemas/params.py"}
    problems = audit(
        "split", stage, (opened | schemas | {"curation/split_cli.py", "curation/io.py"}, reads), schemas, params, []
    )
    assert problems == [
        "split: opens releases/splits.parquet, not a declared dep or out",
        "split: reads data/out/b.parquet, its own earlier output: an input DVC does not know of",
        "split: declares dep data/unused.csv, which its command never opens",
    ]
