"""Build the test bed's real binaries from the Go module proxy, and cache them.

The test bed runs real etcd, kube-apiserver, kube-controller-manager, the four Flux
controllers and Helm as local processes. None of them is downloaded as a prebuilt binary:
each one is compiled with the local Go toolchain from the module that the Go module proxy
serves, inside a small *wrapper module* that requires the upstream module and builds its
main package (upstream modules carry ``replace`` directives to local paths, which make
``go install module@version`` refuse them).

Binaries are cached outside the repository, keyed by version::

    ${HEXABASE_TOOLS_DIR:-~/.cache/hexabase/tools}/<name>-<version>/<binary>

and are reused when present. The Go module cache and build cache stay at Go's defaults.

Command line::

    python -m api.testbed.tools build [--only NAME]...   # build what is missing
    python -m api.testbed.tools list                     # names, versions, paths
    python -m api.testbed.tools path NAME                # print one binary's path
    python -m api.testbed.tools module-dir MODULE VERSION

From Python::

    from api.testbed.tools import ensure_tools, module_dir, crd_files
    paths = ensure_tools(["etcd", "kube-apiserver"])   # {"etcd": Path(...), ...}
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

# --------------------------------------------------------------------------------------
# Versions: the one place where they are written down.
# --------------------------------------------------------------------------------------

#: The Flux release whose controllers we build, and the controller versions it ships
#: (as its manifests/bases name them). Flux v2.9.2 is the newest release all four of whose
#: controllers build here from what the Go module proxy serves, with Go 1.26:
#: - Flux 2.10's controllers need Go 1.27;
#: - v2.9.5: the proxy refuses notification-controller v1.9.4, and source-controller v1.9.5
#:   needs github.com/fluxcd/pkg/artifact v0.18.3 (refused);
#: - v2.9.4: source-controller v1.9.4 needs github.com/fluxcd/pkg/artifact v0.18.2
#:   (refused); helm-controller v1.6.3 replaces helm.sh/helm/v4 with
#:   github.com/fluxcd/helm/v4 v4.2.4-flux.1 (refused);
#: - v2.9.3: ships that same helm-controller v1.6.3.
FLUX_RELEASE = "v2.9.2"
FLUX_CONTROLLERS: Mapping[str, str] = MappingProxyType(
    {
        "source-controller": "v1.9.3",
        "kustomize-controller": "v1.9.3",
        "helm-controller": "v1.6.2",
        "notification-controller": "v1.9.2",
    }
)


@dataclass(frozen=True)
class Versions:
    """Every upstream version the test bed uses."""

    #: Newest v3.6 patch served (v3.7 is too; k8s.io/kubernetes v1.36.3 uses etcd client v3.6.8).
    etcd: str = "v3.6.16"
    #: Staging modules are served at the matching v0.36.3.
    kubernetes: str = "v1.36.3"
    #: Newest Helm 4 served; builds with Go 1.26.
    helm: str = "v4.3.2"
    flux: str = FLUX_RELEASE
    flux_controllers: Mapping[str, str] = field(default_factory=lambda: FLUX_CONTROLLERS)
    # Modules read for their files only (CRDs, the vCluster chart); never built.
    #: Newest served.
    knative_serving: str = "v0.51.0"
    #: Newest served.
    kyverno: str = "v1.19.1"
    #: Newest v0.36 served (v0.36.2+ are refused).
    vcluster: str = "v0.36.1"

    @property
    def kubernetes_staging(self) -> str:
        """The published version of the k8s.io staging modules (v1.36.3 -> v0.36.3)."""
        return "v0." + self.kubernetes.removeprefix("v1.")


VERSIONS = Versions()


@dataclass(frozen=True)
class ToolSpec:
    """How to build and check one binary."""

    name: str
    module: str
    version: str
    package: str
    binary: str
    ldflags: tuple[str, ...] = ()
    #: Version that replaces each local-path ``replace`` of the upstream go.mod
    #: (Kubernetes' staging modules); None drops local-path replaces instead.
    local_replace_version: str | None = None
    check_args: tuple[str, ...] = ("--version",)
    check_expect: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def _kube_ldflags(v: Versions) -> tuple[str, ...]:
    major, minor = v.kubernetes.removeprefix("v").split(".")[:2]
    values = {
        "gitVersion": v.kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "",
        "gitTreeState": "archive",
        # Fixed, so that builds are reproducible: the day the release was tagged.
        "buildDate": _KUBE_RELEASE_DATES.get(v.kubernetes, "1970-01-01T00:00:00Z"),
    }
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in values.items()]
    return tuple(flags)


_KUBE_RELEASE_DATES = {"v1.36.3": "2026-07-22T18:07:38Z"}


def tool_specs(v: Versions = VERSIONS) -> dict[str, ToolSpec]:
    """The build recipe of every tool, by name."""
    kube = _kube_ldflags(v)
    specs = [
        ToolSpec(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=v.etcd,
            package="go.etcd.io/etcd/server/v3",
            binary="etcd",
            ldflags=("-X go.etcd.io/etcd/api/v3/version.GitSHA=go-module",),
            check_expect="etcd Version: " + v.etcd.removeprefix("v"),
        ),
        ToolSpec(
            name="kube-apiserver",
            module="k8s.io/kubernetes",
            version=v.kubernetes,
            package="k8s.io/kubernetes/cmd/kube-apiserver",
            binary="kube-apiserver",
            ldflags=kube,
            local_replace_version=v.kubernetes_staging,
            check_expect="Kubernetes " + v.kubernetes,
        ),
        ToolSpec(
            name="kube-controller-manager",
            module="k8s.io/kubernetes",
            version=v.kubernetes,
            package="k8s.io/kubernetes/cmd/kube-controller-manager",
            binary="kube-controller-manager",
            ldflags=kube,
            local_replace_version=v.kubernetes_staging,
            check_expect="Kubernetes " + v.kubernetes,
        ),
        ToolSpec(
            name="helm",
            module="helm.sh/helm/v4",
            version=v.helm,
            package="helm.sh/helm/v4/cmd/helm",
            binary="helm",
            ldflags=(
                f"-X helm.sh/helm/v4/internal/version.version={v.helm}",
                "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
            ),
            check_args=("version",),
            check_expect=v.helm,
        ),
    ]
    for controller, version in v.flux_controllers.items():
        specs.append(
            ToolSpec(
                name=controller,
                module=f"github.com/fluxcd/{controller}",
                version=version,
                package=f"github.com/fluxcd/{controller}",
                binary=controller,
                check_args=("--help",),
            )
        )
    return {spec.name: spec for spec in specs}


TOOLS: Mapping[str, ToolSpec] = MappingProxyType(tool_specs())
TOOL_NAMES: tuple[str, ...] = tuple(TOOLS)

#: Where CRDs live inside module zips: name -> (module, version, directory in the module).
CRD_SOURCES: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        **{
            name: (f"github.com/fluxcd/{name}", version, "config/crd/bases")
            for name, version in VERSIONS.flux_controllers.items()
        },
        "knative-serving": (
            "knative.dev/serving",
            VERSIONS.knative_serving,
            "config/core/300-resources",
        ),
        "kyverno": ("github.com/kyverno/kyverno", VERSIONS.kyverno, "config/crds"),
    }
)
#: The vCluster Helm chart: (module, version, directory in the module).
VCLUSTER_CHART: tuple[str, str, str] = ("github.com/loft-sh/vcluster", VERSIONS.vcluster, "chart")
#: The chart's release version. The module's Chart.yaml says ``version: 0.0.1`` (vCluster's
#: release pipeline stamps the real one): copy_vcluster_chart() writes this one in.
#: The proxy serves github.com/loft-sh/vcluster v0.36.0 and v0.36.1 (not v0.36.2+).
VCLUSTER_CHART_VERSION = VERSIONS.vcluster.removeprefix("v")


class ToolBuildError(RuntimeError):
    """A tool could not be built, or the built binary failed its check."""


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


def tools_dir() -> Path:
    """Root of the binary cache (env HEXABASE_TOOLS_DIR, else ~/.cache/hexabase/tools)."""
    env = os.environ.get("HEXABASE_TOOLS_DIR")
    root = Path(env) if env else Path.home() / ".cache" / "hexabase" / "tools"
    return root.expanduser().resolve()


def tool_path(name: str) -> Path:
    """Where the binary of tool ``name`` lives (whether or not it is built yet)."""
    spec = _spec(name)
    return tools_dir() / spec.key / spec.binary


def _spec(name: str) -> ToolSpec:
    try:
        return TOOLS[name]
    except KeyError:
        raise ToolBuildError(f"unknown tool {name!r}; known: {', '.join(TOOL_NAMES)}") from None


# --------------------------------------------------------------------------------------
# Progress and subprocesses
# --------------------------------------------------------------------------------------

_T0 = time.monotonic()


def _log(msg: str) -> None:
    print(f"[tools {time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolBuildError("the Go toolchain ('go') is not on PATH")
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GO111MODULE": "on", "GOWORK": "off", "CGO_ENABLED": "0"})
    return env


def _nice() -> list[str]:
    # Builds share two cores with other people's tests: always run at the lowest priority.
    return ["nice", "-n", "19"] if shutil.which("nice") else []


_REFUSED = re.compile(
    r"(?P<mod>[A-Za-z0-9][\w.\-~/]*)@(?P<ver>v[\w.+\-]+): (?:reading|verifying) [^\n]*?"
    r"(?P<why>\b(?:403|404|410)\b[^\n]*|not available[^\n]*)"
)
_REFUSED_INFO = re.compile(r"(?P<why>\b(?:403|404|410)\b[^\n]*|not available[^\n]*)")


def _explain_refusal(output: str) -> str | None:
    m = _REFUSED.search(output)
    if m:
        return (
            f"the Go module proxy refused module {m['mod']} version {m['ver']}: {m['why'].strip()}"
        )
    return None


def _run(
    args: Sequence[str],
    *,
    cwd: Path,
    what: str,
    log_file: Path | None = None,
    heartbeat: float = 30.0,
) -> str:
    """Run a go command at low priority; return stdout; raise ToolBuildError on failure.

    Stderr goes to ``log_file`` if given (and its tail into the error); a heartbeat on
    stderr tells that a long step is still running.
    """
    start = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat):
            _log(f"{what}: still running ({time.monotonic() - start:.0f}s)")

    ticker = threading.Thread(target=beat, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run(
            [*_nice(), *args],
            cwd=cwd,
            env=_go_env(),
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        done.set()
        ticker.join()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(f"$ {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        output = proc.stdout + "\n" + proc.stderr
        refusal = _explain_refusal(output)
        tail = "\n".join(output.strip().splitlines()[-30:])
        where = f" (full log: {log_file})" if log_file else ""
        head = refusal or f"{what} failed with exit code {proc.returncode}"
        raise ToolBuildError(f"{head}{where}\n{tail}")
    _log(f"{what}: done in {time.monotonic() - start:.1f}s")
    return proc.stdout


# --------------------------------------------------------------------------------------
# Module downloads (also used to read CRDs and charts out of module zips)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleInfo:
    path: str
    version: str
    dir: Path
    go_mod: Path
    time: str


def _decode_json_stream(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)


@cache
def download_module(module: str, version: str) -> ModuleInfo:
    """Fetch ``module@version`` into the Go module cache (``go mod download -json``)."""
    with tempfile.TemporaryDirectory(prefix="hexabase-gomod-") as tmp:
        proc = subprocess.run(
            [*_nice(), _go(), "mod", "download", "-json", f"{module}@{version}"],
            cwd=tmp,
            env=_go_env(),
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        info = _decode_json_stream(proc.stdout)[0]
    except (ValueError, IndexError):
        info = {}
    error = str(info.get("Error") or "")
    if proc.returncode != 0 or error or "Dir" not in info:
        detail = error or proc.stderr.strip() or proc.stdout.strip()
        m = _REFUSED_INFO.search(detail)
        if m:
            raise ToolBuildError(
                f"the Go module proxy refused module {module} version {version}: {m['why'].strip()}"
            )
        raise ToolBuildError(f"cannot download Go module {module}@{version}: {detail}")
    return ModuleInfo(
        path=str(info["Path"]),
        version=str(info["Version"]),
        dir=Path(info["Dir"]),
        go_mod=Path(info["GoMod"]),
        time=str(info.get("Time", "")),
    )


def module_dir(module: str, version: str) -> Path:
    """The unpacked (read-only) tree of ``module@version`` in the Go module cache."""
    return download_module(module, version).dir


def module_files(
    module: str, version: str, subdir: str = ".", pattern: str = "*.yaml", recursive: bool = True
) -> list[Path]:
    """Files under ``subdir`` of ``module@version`` that match ``pattern``, sorted."""
    base = module_dir(module, version) / subdir
    if not base.is_dir():
        raise FileNotFoundError(f"{module}@{version} has no directory {subdir!r}")
    found = base.rglob(pattern) if recursive else base.glob(pattern)
    return sorted(p for p in found if p.is_file())


def crd_files(source: str) -> list[Path]:
    """CRD manifests of one of CRD_SOURCES (a Flux controller, knative-serving, kyverno)."""
    try:
        module, version, subdir = CRD_SOURCES[source]
    except KeyError:
        raise KeyError(f"unknown CRD source {source!r}; known: {', '.join(CRD_SOURCES)}") from None
    return [p for p in module_files(module, version, subdir) if p.name != "kustomization.yaml"]


def vcluster_chart_dir() -> Path:
    """The vCluster Helm chart directory (read-only; copy it before modifying)."""
    module, version, subdir = VCLUSTER_CHART
    path = module_dir(module, version) / subdir
    if not (path / "Chart.yaml").is_file():
        raise FileNotFoundError(f"{module}@{version} has no chart at {subdir!r}")
    return path


def copy_module_tree(module: str, version: str, subdir: str, dest: Path) -> Path:
    """Copy ``subdir`` of ``module@version`` to ``dest`` (made writable); return ``dest``."""
    src = module_dir(module, version) / subdir
    if not src.is_dir():
        raise FileNotFoundError(f"{module}@{version} has no directory {subdir!r}")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dest


def copy_vcluster_chart(dest: Path) -> Path:
    """A writable copy of the vCluster chart at ``dest`` with its real version stamped in."""
    module, version, subdir = VCLUSTER_CHART
    copy_module_tree(module, version, subdir, dest)
    chart_yaml = dest / "Chart.yaml"
    text = re.sub(r"(?m)^version:.*$", f"version: {VCLUSTER_CHART_VERSION}", chart_yaml.read_text())
    if not re.search(r"(?m)^appVersion:", text):
        text += f"appVersion: {VCLUSTER_CHART_VERSION}\n"
    chart_yaml.write_text(text)
    return dest


# --------------------------------------------------------------------------------------
# Wrapper modules and builds
# --------------------------------------------------------------------------------------


def _work_dir() -> Path:
    return tools_dir() / ".work"


@contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time across processes (two cores; a shared cache)."""
    lock_path = tools_dir() / ".build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("another process is building tools; waiting for its lock")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_mod_json(go_mod: Path) -> dict[str, Any]:
    out = subprocess.run(
        [_go(), "mod", "edit", "-json", str(go_mod)],
        capture_output=True,
        text=True,
        check=False,
        env=_go_env(),
    )
    if out.returncode != 0:
        raise ToolBuildError(f"cannot parse {go_mod}: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _modpath(entry: Mapping[str, Any]) -> str:
    path = str(entry["Path"])
    version = entry.get("Version")
    return f"{path} {version}" if version else path


def wrapper_go_mod(spec: ToolSpec, upstream: Mapping[str, Any]) -> str:
    """The go.mod of the wrapper module that builds ``spec`` (``upstream``: go mod edit -json).

    Non-local ``replace`` directives of the upstream module are copied; local-path ones
    are dropped, or (Kubernetes' staging modules) pointed at ``local_replace_version``.
    """
    go_version = str(upstream.get("Go") or "1.26")
    lines = [
        f"module hexabase.local/tools/{spec.module.replace('/', '_')}",
        "",
        f"go {go_version}",
        "",
    ]
    for godebug in upstream.get("Godebug") or []:
        lines.append(f"godebug {godebug['Key']}={godebug['Value']}")
    lines += ["", f"require {spec.module} {spec.version}", "", "replace ("]
    for rep in upstream.get("Replace") or []:
        old, new = rep["Old"], rep["New"]
        if not new.get("Version"):  # a local path
            if spec.local_replace_version is None:
                continue
            lines.append(f"\t{old['Path']} => {old['Path']} {spec.local_replace_version}")
        else:
            lines.append(f"\t{_modpath(old)} => {_modpath(new)}")
    lines += [")", ""]
    return "\n".join(lines)


def _prepare_wrapper(spec: ToolSpec) -> Path:
    """Create (or reuse) the tidy wrapper module for ``spec.module@spec.version``."""
    siblings = sorted(
        {s.package for s in TOOLS.values() if (s.module, s.version) == (spec.module, spec.version)}
        | {spec.package}
    )
    info = download_module(spec.module, spec.version)
    upstream = _go_mod_json(info.go_mod)
    go_mod = wrapper_go_mod(spec, upstream)
    tools_go = (
        "//go:build tools\n\n// Package tools pins the main packages this module builds.\n"
        "package tools\n\nimport (\n" + "".join(f'\t_ "{pkg}"\n' for pkg in siblings) + ")\n"
    )
    wdir = _work_dir() / f"{spec.module.replace('/', '_')}@{spec.version}"
    stamp = wdir / ".tidy-ok"
    wanted = go_mod + "\n--\n" + tools_go
    if stamp.is_file() and stamp.read_text() == wanted:
        _log(f"{spec.name}: wrapper module {wdir} is ready")
        return wdir
    if wdir.exists():
        shutil.rmtree(wdir)
    wdir.mkdir(parents=True)
    (wdir / "go.mod").write_text(go_mod)
    (wdir / "tools.go").write_text(tools_go)
    _log(f"{spec.name}: go mod tidy in {wdir} (downloads dependencies)")
    _run(
        [_go(), "mod", "tidy"],
        cwd=wdir,
        what=f"{spec.name}: go mod tidy",
        log_file=wdir / "tidy.log",
    )
    stamp.write_text(wanted)
    return wdir


def check_tool(name: str, path: Path | None = None) -> str:
    """Run the tool's version/help command; return its output; raise if it fails."""
    spec = _spec(name)
    binary = path or tool_path(name)
    proc = subprocess.run(
        [str(binary), *spec.check_args], capture_output=True, text=True, timeout=120, check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or spec.check_expect not in output:
        raise ToolBuildError(
            f"{name}: '{binary} {' '.join(spec.check_args)}' exited {proc.returncode}, "
            f"expected {spec.check_expect!r} in its output:\n{output[-2000:]}"
        )
    return output


def build_tool(name: str, *, force: bool = False) -> Path:
    """Build one tool into the cache (unless present) and return the binary's path."""
    spec = _spec(name)
    target = tool_path(name)
    if target.is_file() and not force:
        return target
    with _build_lock():
        if target.is_file() and not force:  # another process built it meanwhile
            return target
        start = time.monotonic()
        _log(f"{name}: building {spec.package} from {spec.module}@{spec.version}")
        _log(f"{name}: go mod download {spec.module}@{spec.version}")
        wdir = _prepare_wrapper(spec)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{spec.binary}.tmp-{os.getpid()}"
        ldflags = " ".join(["-s", "-w", *spec.ldflags])
        _log(f"{name}: go build {spec.package}")
        try:
            _run(
                [_go(), "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), spec.package],
                cwd=wdir,
                what=f"{name}: go build",
                log_file=wdir / f"build-{name}.log",
            )
            check_tool(name, tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        size = target.stat().st_size / 2**20
        _log(f"{name}: built {target} ({size:.0f} MiB) in {time.monotonic() - start:.1f}s")
        return target


def ensure_tools(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Return ``{name: binary path}``, building whatever is not cached yet.

    ``names`` defaults to every tool (TOOL_NAMES). Raises ToolBuildError on failure.
    """
    wanted = list(TOOL_NAMES if names is None else names)
    for name in wanted:
        _spec(name)
    start = time.monotonic()
    paths: dict[str, Path] = {}
    missing = [n for n in wanted if not tool_path(n).is_file()]
    if missing:
        _log(f"to build: {', '.join(missing)} (cache {tools_dir()})")
    for name in wanted:
        paths[name] = build_tool(name)
    if missing:
        _log(f"all requested tools ready in {time.monotonic() - start:.1f}s")
    return paths


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.testbed.tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the tools that are not cached yet")
    build.add_argument(
        "--only",
        action="append",
        choices=TOOL_NAMES,
        metavar="NAME",
        help="build only this tool (repeatable)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("list", help="list tools, versions and cache paths")
    path = sub.add_parser("path", help="print the path of one tool's binary")
    path.add_argument("name", choices=TOOL_NAMES)
    mdir = sub.add_parser("module-dir", help="download a Go module and print its directory")
    mdir.add_argument("module")
    mdir.add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            names: list[str] = args.only or list(TOOL_NAMES)
            if args.force:
                for name in names:
                    build_tool(name, force=True)
            else:
                ensure_tools(names)
            for name in names:
                print(f"{name}\t{TOOLS[name].version}\t{tool_path(name)}")
        elif args.command == "list":
            for name, spec in TOOLS.items():
                state = "built" if tool_path(name).is_file() else "missing"
                print(f"{name}\t{spec.version}\t{state}\t{tool_path(name)}")
        elif args.command == "path":
            print(tool_path(args.name))
        elif args.command == "module-dir":
            print(module_dir(args.module, args.version))
    except ToolBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
