"""Where a job's output lives: a local (or mounted) directory, or a URI that pyarrow's
filesystems write (``s3://``, ``gs://``, ``hdfs://``).

:class:`OutputDir` is the few operations the output policy, resume and the job record need,
over one ``pyarrow.fs`` filesystem, so the same code serves both. Object stores have no
directories and no rename: a "directory" is a key prefix, and a move is a copy then a delete.
That is enough here, because vidbatch moves only whole files it wrote (a footerless Parquet
file to ``_partial/``), and an object appears only once its upload completes.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.paths import local_path


@dataclass(frozen=True)
class OutputDir:
    """A job's output directory: ``location`` as the spec gives it (an absolute path or a
    URI), ``root`` the same place inside ``fs``."""

    location: str
    fs: pafs.FileSystem
    root: str

    @classmethod
    def at(cls, location: str) -> OutputDir:
        local = local_path(location)
        if local is not None:
            local = posixpath.abspath(local)
            return cls(local, pafs.LocalFileSystem(), local)
        try:
            fs, root = pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, ValueError, OSError) as e:
            raise OutputError(f"cannot write to output.path {location}: {e}. Use a URI that "
                              "pyarrow can open (s3://, gs://, hdfs://) or a local "
                              "directory.") from None
        return cls(location.rstrip("/"), fs, root.rstrip("/"))

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.location

    def path(self, *names: str) -> str:
        """``names`` inside this directory, as a path of ``fs``."""
        return posixpath.join(self.root, *names)

    def display(self, *names: str) -> str:
        """``names`` inside this directory, as the user would write it."""
        return posixpath.join(self.location, *names)

    def kind(self) -> pafs.FileType:
        return self.fs.get_file_info(self.root).type

    def entries(self) -> list[pafs.FileInfo]:
        """What is directly inside (nothing when it does not exist)."""
        if self.kind() != pafs.FileType.Directory:
            return []
        return self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))

    def data_files(self) -> list[str]:
        """The Parquet files directly inside, sorted (paths of ``fs``)."""
        return sorted(e.path for e in self.entries()
                      if e.type == pafs.FileType.File and e.base_name.endswith(".parquet"))

    def read_columns(self, path: str, columns: list[str]) -> pa.Table:
        return pq.read_table(path, columns=columns, filesystem=self.fs)

    def make(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def remove(self, entry: pafs.FileInfo) -> None:
        if entry.type == pafs.FileType.Directory:
            self.fs.delete_dir(entry.path)
        else:
            self.fs.delete_file(entry.path)

    def remove_file(self, name: str) -> None:
        """Delete the file ``name`` inside this directory."""
        self.fs.delete_file(self.path(name))

    def move_into(self, path: str, folder: str) -> None:
        """Move the file ``path`` into the subdirectory ``folder``."""
        self.fs.create_dir(self.path(folder), recursive=True)
        self.fs.move(path, self.path(folder, posixpath.basename(path)))

    def read_text(self, name: str) -> str | None:
        """The text of the file ``name``; None if there is none."""
        if self.fs.get_file_info(self.path(name)).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Write the file ``name`` whole or not at all: locally through a temporary file,
        flushed to disk, then renamed over it (:func:`write_atomically`); an object store's
        upload appears only once complete."""
        if self.local:
            write_atomically(Path(self.path(name)), text.encode("utf-8"))
            return
        with self.fs.open_output_stream(self.path(name)) as f:
            f.write(text.encode("utf-8"))


# Temporary files that write_atomically leaves behind when the process dies mid-write.
STAGING_SUFFIX = ".vidbatch-tmp"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace the local file ``path`` with ``data`` whole or not at all: write a temporary
    file beside it, fsync it, rename it over ``path`` (atomic on POSIX), fsync the folder.
    A crash leaves the old file and, at worst, a ``*.vidbatch-tmp`` file that the next
    write replaces (:data:`STAGING_SUFFIX`)."""
    staging = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}")
    with open(staging, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staging, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
