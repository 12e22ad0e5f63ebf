"""The journal of predictions created and not saved yet: what a crash must not lose.

A prediction is billed once created. Between the create's answer and the saved image, a process
can be killed (``kill -9``, a closed laptop, an IDE restarting its MCP servers); the provider
keeps the outputs about an hour. Each front end that saves images (the MCP server, the
``flux-tools`` command) records the prediction here the moment its id is known and removes it
once the image is saved or the prediction ended without one; on its next start it resumes what
is left. Batches keep their own ledger (:mod:`flux_tools._drivers.ledger`), which follows the
same rule.

The journal owns only what it wrote. Its folder is refused when it is a symbolic link, resolves
outside the output folder, or was not made by flux-tools (a marker file says it was); a file in
it is touched only when it is an entry in the exact format (its name is the digest of the id it
holds). Each entry records the API it was created on (the origin of the base URL) and the person
it belongs to (``owner``: None for local use): a journal shared by processes on other APIs, or
of other people, leaves their entries alone. An entry is dropped only when its prediction is
over without an image, or older than the provider keeps outputs, never because an API said 404
(a wrong base URL says that too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeGuard

from .._base.errors import ConfigError, PredictionFailed, PredictionTimeout
from .._base.files import write_text_atomic
from .._base.text import safe_text
from .._base.urls import origin

logger = logging.getLogger("flux_tools")


#: The journal's folder, inside the output folder: one small JSON file per pending prediction.
JOURNAL_DIR = ".flux-journal"
#: The file that marks a journal folder as made by flux-tools: nothing is written to, or removed
#: from, a folder without it (but an empty one, or one holding only entries, which is adopted).
JOURNAL_MARKER = ".flux-tools-journal"
#: Replicate deletes a prediction's outputs about an hour after it was created: past that, an
#: entry can no longer bring its image back.
RETENTION_SECONDS = 3600.0
#: The longest prediction id journaled (Replicate's are 26 characters).
MAX_ID_CHARS = 200
_ENTRY_NAME = re.compile(r"^[0-9a-f]{32}\.json$")
#: Where a damaged entry still shows its id (and model, API).
_READABLE = {
    name: re.compile(rf'"{name}"\s*:\s*"((?:[^"\\\x00-\x1f]|\\.){{1,{MAX_ID_CHARS}}})"')
    for name in ("prediction_id", "model", "api")
}


def valid_prediction_id(value: object) -> TypeGuard[str]:
    """What the journal accepts as an id, when writing and when reading: printable text (no tab,
    no newline) of 1 to :data:`MAX_ID_CHARS` characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and value.isprintable()


def api_origin(base_url: str) -> str:
    """The origin an entry records: ``https://api.replicate.com:443`` (scheme, host, port)."""
    scheme, host, port = origin(base_url)
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class PendingPrediction:
    """A prediction created and not saved yet (one journal entry)."""

    prediction_id: str
    model: str
    #: Wall-clock time (epoch seconds) when it was created.
    created: float
    #: The image inputs as the caller gave them (provenance for the sidecars).
    sources: dict[str, str] = field(default_factory=dict)
    #: The origin of the API it was created on (:func:`api_origin`); None: not recorded.
    api: str | None = None
    #: Whose it is, when people sign in (the MCP server); None for local use.
    owner: str | None = None
    #: Read from a damaged entry: its id was readable, the rest may not be.
    damaged: bool = False

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.created

    def to_json(self) -> str:
        """The entry as it is recorded (a journal file, a shared state's record)."""
        fields = ("prediction_id", "model", "created", "sources", "api", "owner")
        return json.dumps({name: getattr(self, name) for name in fields})

    @classmethod
    def from_json(cls, text: str) -> PendingPrediction | None:
        """An entry read back, or None unless it is one in the exact format."""
        return _parse_entry(text)

    def expired_text(self) -> str:
        """Why an entry :meth:`Journal.take_up` dropped is gone, for a log or a terminal."""
        return (
            f"prediction {safe_text(self.prediction_id, 100)} was created "
            f"{self.age() / 60:.0f} minutes ago, past the provider's retention (about an hour): "
            "its image can no longer be fetched; dropped from the journal"
        )


class Journal:
    """``<output folder>/.flux-journal/<digest>.json``, one file per pending prediction.

    Written atomically (a temporary file, then a rename) right after the create answered, and
    removed once the image is saved or the prediction ended without one. A process killed in
    between (the MCP server, ``flux-tools generate``) leaves its entries, which the next start
    (the server) or ``flux-tools resume`` takes up. File names are a digest of the id: an id
    is the API's text, never a path.

    ``api``: the base URL of the API this process uses; only entries of its origin are listed
    (None: every entry). ``owner``: the person this process acts for; only their entries are,
    unless ``every_owner`` (a server working for everyone: each entry keeps its own owner).
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        api: str | None = None,
        owner: str | None = None,
        every_owner: bool = False,
    ) -> None:
        self.output_dir = output_dir
        self.directory = output_dir / JOURNAL_DIR
        self.api = api_origin(api) if api else None
        self.owner = owner
        self.every_owner = every_owner
        self._left_alone: set[str] = set()

    def _path(self, prediction_id: str) -> Path:
        digest = hashlib.sha256(prediction_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self.directory / f"{digest[:32]}.json"

    # -- the folder: ours, or refused ----------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`ConfigError` (one line: the folder and what to do) when the journal
        could not be written: its folder is refused, or the output folder is not writable. Run
        before paying for an image that could not be journaled."""
        problem = self._refusal()
        if problem is not None:
            raise ConfigError(problem)

    def _refusal(self, looks: int = 4) -> str | None:
        """Why the journal folder is not ours (None: it is ours, or does not exist yet)."""
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot read the journal folder {self.directory}: {exc.strerror or exc}"
        where = f"the journal folder {self.directory}"
        if stat.S_ISLNK(info.st_mode):
            return (
                f"{where} is a symbolic link: flux-tools neither writes nor deletes through "
                "one. Remove the link, or choose another output folder."
            )
        if not stat.S_ISDIR(info.st_mode):
            return f"{where} is not a folder. Move it away, or choose another output folder."
        real_dir = os.path.realpath(self.directory)
        if os.path.dirname(real_dir) != os.path.realpath(self.output_dir):
            return f"{where} resolves to {real_dir}, outside the output folder: not used."
        if self._marked() or self._adopt():
            return None
        # Another writer's last remove may take the folder away (and a writer make it again, or
        # add to it) while we look: not a stranger's folder, look again.
        try:
            now = os.lstat(self.directory)
        except FileNotFoundError:
            return None
        except OSError:
            now = info
        moved = (now.st_dev, now.st_ino, now.st_mtime_ns) != (
            info.st_dev,
            info.st_ino,
            info.st_mtime_ns,
        )
        if moved and looks > 1:
            return self._refusal(looks - 1)
        return (
            f"{where} was not made by flux-tools (no {JOURNAL_MARKER} in it, and files that are "
            "not journal entries): nothing in it is touched. Move it away, or choose another "
            "output folder."
        )

    def _marked(self) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.directory / JOURNAL_MARKER).st_mode)
        except OSError:
            return False

    def _adopt(self) -> bool:
        """A folder without the marker that holds nothing but journal entries (or nothing: the
        marker of a fresh folder is written just after it) is ours: mark it."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return False
        for name in names:
            if name == JOURNAL_MARKER or _is_temporary(name):
                continue
            if not _ENTRY_NAME.match(name):
                return False
            path = self.directory / name
            if self._read(path) is None and os.path.lexists(path):
                return False  # (an entry removed since the listing is no stranger's file)
        # Ours, marked or not: the marker may fail to stick while another thread's last remove
        # takes it away with the folder; the next look marks it again.
        self._mark()
        return True

    def _mark(self) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.directory / JOURNAL_MARKER, flags, 0o644)
        except FileExistsError:
            return self._marked()
        except OSError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as marker:
            marker.write("flux-tools journal: entries of predictions not saved yet\n")
        return True

    def _ready(self) -> str | None:
        """Make (or check) the folder before writing; why not, or None."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.directory)
        except OSError as exc:
            return f"cannot make {self.directory}: {exc.strerror or exc}"
        return self._refusal()  # a folder just made is empty: marked as ours here

    # -- entries ---------------------------------------------------------------------------------

    def add(self, entry: PendingPrediction) -> bool:
        """Record ``entry`` (with this journal's API and owner when it names none). Never
        raises: a journal that cannot be written only logs. Returns whether it was written."""
        if not valid_prediction_id(entry.prediction_id):
            logger.warning(
                "prediction id %s is not one the journal keeps (1 to %d printable characters): "
                "it will not be resumed if this process stops before it is saved",
                safe_text(entry.prediction_id, 100),
                MAX_ID_CHARS,
            )
            return False
        owner = entry.owner if entry.owner is not None else self.owner
        record = replace(entry, api=entry.api or self.api, owner=owner).to_json()
        problem: str | None = None
        for _ in range(8):  # the folder may be removed with another's last entry meanwhile
            problem = self._ready()
            if problem is not None:
                break
            try:
                write_text_atomic(self._path(entry.prediction_id), record + "\n")
                return True
            except FileNotFoundError as exc:
                problem = str(exc.strerror or exc)
            except OSError as exc:
                problem = str(exc.strerror or exc)
                break
        logger.warning(
            "could not record prediction %s in the journal (%s): it will not be resumed if this "
            "process stops before it is saved",
            safe_text(entry.prediction_id, 100),
            problem,
        )
        return False

    def remove(self, prediction_id: str) -> None:
        """Close the entry of ``prediction_id`` (only a file that is that entry); the folder
        goes with the last one (no clutter in the user's)."""
        if not valid_prediction_id(prediction_id) or self._refusal() is not None:
            return
        path = self._path(prediction_id)
        entry = self._read(path)
        if entry is None or entry.prediction_id != prediction_id:
            return  # none, or not that entry: not ours to remove
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning(
                "could not remove journal entry %s: %s", safe_text(prediction_id, 100), exc
            )
            return
        self._tidy()

    def _tidy(self) -> None:
        """Remove the folder when nothing but the marker is left in it."""
        try:
            if set(os.listdir(self.directory)) - {JOURNAL_MARKER}:
                return
            os.unlink(self.directory / JOURNAL_MARKER)
        except OSError:
            return
        # Not empty (a writer came meanwhile: it marks the folder again): it stays.
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def settle(self, prediction_id: str | None, error: BaseException, *, owner: bool) -> bool:
        """After ``error`` stopped a generation (``owner``) or a watch of ``prediction_id``:
        remove its entry when the prediction is over without an image to save (see
        :func:`ended_without_image`); return whether it was removed."""
        if prediction_id and ended_without_image(error, owner=owner):
            self.remove(prediction_id)
            return True
        return False

    def get(self, prediction_id: str) -> PendingPrediction | None:
        if not valid_prediction_id(prediction_id) or self._refusal() is not None:
            return None
        entry = self._read(self._path(prediction_id))
        return entry if entry is not None and entry.prediction_id == prediction_id else None

    def entries(self) -> list[PendingPrediction]:
        """The entries of this journal's API and owner, oldest first. Nothing is removed here:
        a file that is not an entry is left alone (and logged once)."""
        return [e for e in self._scan() if self._mine(e)]

    def others(self) -> list[PendingPrediction]:
        """The entries of other APIs or other people: left alone, for them to take up."""
        return [e for e in self._scan() if not self._mine(e)]

    def _mine(self, entry: PendingPrediction) -> bool:
        other_api = self.api is not None and entry.api is not None and entry.api != self.api
        return not other_api and (self.every_owner or entry.owner == self.owner)

    def _scan(self) -> list[PendingPrediction]:
        refusal = self._refusal()
        if refusal is not None:
            if refusal not in self._left_alone:
                self._left_alone.add(refusal)
                logger.warning("%s", refusal)
            return []
        try:
            names = sorted(os.listdir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            if name == JOURNAL_MARKER or _is_temporary(name):
                continue
            entry = self._read(self.directory / name) if _ENTRY_NAME.match(name) else None
            if entry is None:
                if name not in self._left_alone:
                    self._left_alone.add(name)
                    logger.warning(
                        "left alone in the journal folder: %s is not a journal entry",
                        safe_text(name, 100),
                    )
                continue
            found.append(entry)
        return sorted(found, key=lambda e: e.created)

    def take_up(
        self, now: float | None = None
    ) -> tuple[list[PendingPrediction], list[PendingPrediction]]:
        """The entries to resume, and those dropped (removed) because they are older than the
        provider keeps outputs (:data:`RETENTION_SECONDS`): their image can no longer be had."""
        live, expired = [], []
        for entry in self.entries():
            if entry.age(now) > RETENTION_SECONDS:
                self.remove(entry.prediction_id)
                expired.append(entry)
            else:
                live.append(entry)
        return live, expired

    def _read(self, path: Path) -> PendingPrediction | None:
        """The entry in ``path`` when it is one: a regular file whose name is the digest of the
        id it holds. A damaged one whose id is still readable is an entry too."""
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size > 64 * 1024:
                return None
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return None
        entry = _parse_entry(text)
        if entry is None:
            entry = _salvage_entry(text, info.st_mtime)
        if entry is None or self._path(entry.prediction_id).name != path.name:
            return None
        return entry


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`write_text_atomic` (``.<entry>.json.<random>.part``)."""
    return name.startswith(".") and name.endswith(".part") and ".json." in name


def _parse_entry(text: str) -> PendingPrediction | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, model, created = data.get("prediction_id"), data.get("model"), data.get("created")
    sources = data.get("sources") or {}
    api, owner = data.get("api"), data.get("owner")
    if not valid_prediction_id(pid) or not isinstance(model, str):
        return None
    if not isinstance(created, int | float) or not isinstance(sources, dict):
        return None
    if not (api is None or isinstance(api, str)) or not (owner is None or isinstance(owner, str)):
        return None
    clean = {k: v for k, v in sources.items() if isinstance(k, str) and isinstance(v, str)}
    return PendingPrediction(pid, model, float(created), clean, api, owner)


def _salvage_entry(text: str, modified: float) -> PendingPrediction | None:
    """A half-written (or damaged) entry whose id is still readable: kept, and resumed."""
    readable: dict[str, str] = {}
    for name, pattern in _READABLE.items():
        match = pattern.search(text)
        if match is not None:
            with contextlib.suppress(ValueError):
                readable[name] = json.loads(f'"{match.group(1)}"')
    pid = readable.get("prediction_id", "")
    if not valid_prediction_id(pid):
        return None
    return PendingPrediction(
        pid, readable.get("model", ""), modified, api=readable.get("api"), damaged=True
    )


def ended_without_image(error: BaseException, *, owner: bool) -> bool:
    """Whether ``error``, raised while generating (``owner``) or watching a prediction, means
    it is over with no image to save, so its journal entry can go: it ended failed, canceled or
    aborted; its deadline passed and the cancel was sent; or the owner was interrupted (the
    core cancels what it owns). Anything else (a network failure, a download that failed, a
    watcher interrupted, an API that says it does not know the id: a wrong base URL, or a
    gateway that forgot it, says that too) keeps the entry, until it is older than the provider
    keeps outputs."""
    if not isinstance(error, Exception):  # KeyboardInterrupt, a cancelled task
        return owner
    if isinstance(error, PredictionFailed):
        return True
    if isinstance(error, PredictionTimeout):
        return error.canceled
    return False
