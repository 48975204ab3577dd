"""Size of the robot's install: ``pip install pomona`` with no extras, in a fresh venv.

    python benchmarks/install/run.py [--before REF] [--after REF] [--work DIR] [--before-venv V] [--after-venv V]
    python benchmarks/install/run.py --markdown-only      # results.md again from results.json

For each of before/after: the sources (a git ref via ``git archive``, or the work tree when the ref is
``worktree``) are copied to a temporary folder, a venv is made with this Python, ``pip install
--no-cache-dir SRC`` runs (pip as set up on the machine: index, find-links, constraints), then
``du -sm`` of the venv's site-packages and of the whole venv, ``pip list`` and the distributions that
provide ``cv2``. Writes results.json and results.md next to this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOURCES = ("pyproject.toml", "README.md", "pomona", "pipeline", "export", "edge")
PIP = ["--disable-pip-version-check", "--no-input", "--no-cache-dir"]
PROBE = """
import json, sysconfig
from importlib.metadata import distributions
print(json.dumps({"site": sysconfig.get_paths()["purelib"],
                  "cv2": sorted({d.metadata["Name"] for d in distributions()
                                 if any(f.parts[:1] == ("cv2",) for f in (d.files or []))})}))
"""


def sources(ref: str, dest: Path) -> str:
    dest.mkdir(parents=True)
    if ref == "worktree":
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copy2(path, dest / name)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return f"work tree (HEAD {head.stdout.strip()} + changes)"
    archive = subprocess.run(["git", "archive", ref, *SOURCES], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    full = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True)
    return f"commit {full.stdout.strip()}"


def du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def measure(ref: str, work: Path, venv: Path | None = None) -> dict:
    """Build the install of ``ref`` in a fresh venv; or, with ``venv``, measure one built that way before."""
    if venv is not None:
        label, seconds = f"{ref} (venv {venv} built earlier the same way)", None
    else:
        src, venv = work / "src", work / "venv"
        label = sources(ref, src)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        t0 = time.perf_counter()
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", *PIP, str(src)], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = round(time.perf_counter() - t0, 1)
    python = str(venv / "bin" / "python")
    listed = json.loads(subprocess.run([python, "-m", "pip", "list", "--format", "json", *PIP[:2]],
                                       capture_output=True, text=True, check=True).stdout)
    packages = sorted(f"{p['name']}=={p['version']}" for p in listed
                      if p["name"].lower() not in ("pip", "setuptools", "wheel", "pomona"))
    probe = json.loads(subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    return {"ref": ref, "source": label, "site_packages_mb": du_mb(Path(probe["site"])), "venv_mb": du_mb(venv),
            "packages": packages, "cv2_distributions": probe["cv2"], "pip_install_s": seconds}


def names(rows: list[str]) -> set[str]:
    return {r.split("==")[0].lower() for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="0ae5cf7", help="git ref of the 'before' install (default: the last commit "
                                                       "whose base install had trackers and supervision)")
    p.add_argument("--after", default="worktree", help="git ref of the 'after' install, or 'worktree'")
    p.add_argument("--work", default=None, help="keep the venvs here (default: a temporary folder)")
    p.add_argument("--before-venv", type=Path, default=None,
                   help="measure this venv (pip install of --before, no extras, built earlier) instead of building one")
    p.add_argument("--after-venv", type=Path, default=None, help="the same for --after")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--markdown-only", action="store_true", help="only write results.md again from results.json")
    a = p.parse_args()
    out = Path(a.out)
    if a.markdown_only:
        write_markdown(json.loads((out / "results.json").read_text()), out)
        return
    with tempfile.TemporaryDirectory(prefix="pomona-install-") as tmp:
        work = Path(a.work or tmp)
        before = measure(a.before, work / "before", a.before_venv)
        after = measure(a.after, work / "after", a.after_venv)
    result = {"command": ("python benchmarks/install/run.py " + " ".join(sys.argv[1:])).strip(),
              "python": sys.version.split()[0], "install": "pip install --no-cache-dir SRC (no extras) in a fresh venv",
              "before": before, "after": after,
              "removed": sorted(names(before["packages"]) - names(after["packages"])),
              "added": sorted(names(after["packages"]) - names(before["packages"]))}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out)


def write_markdown(result: dict, out: Path) -> None:
    b, f = result["before"], result["after"]
    lines = ["# Size of the edge install (`pip install pomona`, no extras)", "",
             f"Fresh venv, Python {result['python']}, `pip install --no-cache-dir` of the sources (pip as set up on "
             f"the machine), then `du -sm` and `pip list`. Command: `{result['command']}`.", "",
             "| | source | site-packages MB | whole venv MB | packages | cv2 from | pip install s |",
             "|---|---|---|---|---|---|---|",
             f"| before | {b['source']} | {b['site_packages_mb']} | {b['venv_mb']} | {len(b['packages'])} | "
             f"{', '.join(b['cv2_distributions'])} | {b['pip_install_s'] or '-'} |",
             f"| after | {f['source']} | {f['site_packages_mb']} | {f['venv_mb']} | {len(f['packages'])} | "
             f"{', '.join(f['cv2_distributions'])} | {f['pip_install_s'] or '-'} |", "",
             "Packages counted without pip, setuptools and pomona itself.", "",
             f"Gone from the install: {', '.join(result['removed']) or 'none'}.", "",
             f"New in the install: {', '.join(result['added']) or 'none'}.", "",
             f"After: {', '.join(f['packages'])}.", "",
             "ByteTrack for `--track` comes from edgefirst-tracker instead of trackers (which pulls opencv-python, "
             "scipy and supervision with matplotlib and PyAV): counting error on simulated detections in "
             "tracker_choice.md.", ""]
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))

if __name__ == "__main__":
    main()
