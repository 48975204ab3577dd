"""Where the workers publish a dataset: a folder every node sees (a shared filesystem) or an fsspec URL.

Every file is published whole or not at all: on a filesystem it is written under a hidden temporary name and
renamed (:mod:`pomona.atomic`); on an object store (``s3://``, ``gs://``) one PUT is already atomic. A job's
bookkeeping lives in the hidden ``STAGING`` folder of the dataset until the job is finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pomona import atomic
from pomona.errors import PomonaError, first_line

STAGING = ".pomona-ray"


class Store:
    """One dataset location; picklable, so the workers get it as an argument."""

    def __init__(self, location: str | Path, options: dict | None = None):
        """``options``: fsspec storage options (credentials, endpoint_url, ...); without them the filesystem
        reads its usual configuration on each node (AWS_* variables, FSSPEC_S3_* variables, config files)."""
        text = str(location)
        self.options = dict(options or {})
        self.is_url = "://" in text and not text.startswith("file://")
        self.location = text if self.is_url else str(Path(text.removeprefix("file://")).expanduser().absolute())
        self._fs = None

    def __getstate__(self):
        return {"is_url": self.is_url, "location": self.location, "options": self.options, "_fs": None}

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            try:
                self._fs, _ = fsspec.core.url_to_fs(self.location, **self.options)
            except (ImportError, ValueError) as e:
                raise PomonaError(f"cannot open {self.location}: {first_line(e)} (s3:// needs s3fs, gs:// gcsfs)") \
                    from None
        return self._fs

    def path(self, rel: str = "") -> str:
        return f"{self.location.rstrip('/')}/{rel}" if rel else self.location

    def __str__(self) -> str:
        return self.location

    # --- reading -----------------------------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self.path(rel)) if self.is_url else Path(self.path(rel)).exists()

    def names(self, rel: str) -> list[str]:
        """File names directly inside ``rel`` (hidden ones left out); [] when it does not exist."""
        if self.is_url:
            if not self.fs.exists(self.path(rel)):
                return []
            found = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.path(rel), detail=False)]
        else:
            folder = Path(self.path(rel))
            found = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        return sorted(name for name in found if not name.startswith("."))

    def read_text(self, rel: str) -> str:
        if self.is_url:
            with self.fs.open(self.path(rel), "r") as f:
                return f.read()
        return Path(self.path(rel)).read_text()

    def read_json(self, rel: str):
        return json.loads(self.read_text(rel))

    def read_bytes(self, rel: str) -> bytes:
        if self.is_url:
            with self.fs.open(self.path(rel), "rb") as f:
                return f.read()
        return Path(self.path(rel)).read_bytes()

    def is_empty(self) -> bool:
        if self.is_url:
            return not self.fs.exists(self.path()) or not self.fs.ls(self.path(), detail=False)
        folder = Path(self.location)
        return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))

    # --- writing (whole files only) -------------------------------------------------------------------

    def put_file(self, src: Path, rel: str) -> None:
        if self.is_url:
            self.fs.put_file(str(src), self.path(rel))
            return
        with atomic.atomic_path(self.path(rel)) as tmp:
            shutil.copyfile(src, tmp)

    def put_tree(self, folder: Path) -> list[str]:
        """Publish every file under ``folder`` at the same relative path; returns those paths."""
        rels = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        for rel in rels:
            self.put_file(folder / rel, rel)
        return rels

    def put_text(self, rel: str, text: str) -> None:
        if self.is_url:
            self.fs.pipe_file(self.path(rel), text.encode())
        else:
            atomic.write_text(self.path(rel), text)

    def put_json(self, rel: str, obj) -> None:
        self.put_text(rel, json.dumps(obj, sort_keys=True) + "\n")

    def remove(self, rel: str) -> None:
        """Remove a file or a folder tree; nothing when it is not there."""
        if self.is_url:
            if self.fs.exists(self.path(rel)):
                self.fs.rm(self.path(rel), recursive=True)
            return
        path = Path(self.path(rel))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def remove_stale_temps(self) -> None:
        """A killed worker (SIGKILL) cannot run atomic_path's clean-up: drop its hidden temporary files."""
        if self.is_url:  # object stores have no temporary names
            return
        for tmp in Path(self.location).rglob(".*.tmp*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)

    def check_writable(self, who: str) -> None:
        """Write and delete a probe file; one line naming ``who`` could not."""
        rel = f".pomona-probe-{who.replace('/', '_')}"
        try:
            self.put_text(rel, "probe\n")
            self.remove(rel)
        except (OSError, PomonaError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
            raise PomonaError(f"{who} cannot write the output {self.location}: {why}") from None
