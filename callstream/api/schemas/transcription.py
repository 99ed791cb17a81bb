"""Request models for transcription_start / transcription_stop (spec §3.5, §3.6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from callstream.api.schemas.common import CommandBody
from callstream.calls.requests import TranscriptionSpec, TranscriptionStart, TranscriptionStop

#: Every engine name Telnyx documents (OAS + the Python SDK), and the legacy A/B.
TranscriptionEngineName = Literal[
    "Google", "Telnyx", "Deepgram", "Azure", "xAI", "AssemblyAI", "Speechmatics", "Soniox",
    "Parakeet", "Humain", "Reson8", "A", "B",
]


class TranscriptionEngineConfig(BaseModel):
    """The union of the engine configs' fields that a local engine can honour.

    Every other key of every engine's config (``region``, ``smart_format``,
    ``profanity_filter``...) is accepted and ignored.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    transcription_engine: str | None = Field(
        None, max_length=64, description="The config's own engine tag (ignored for routing).")
    language: str | None = Field(
        None, max_length=32, description="e.g. en, en-US, de; auto / auto_detect to detect.")
    interim_results: StrictBool = Field(False, description="Also send interim (is_final false) "
                                  "results.")
    transcription_model: str | None = Field(
        None, max_length=256, description="Telnyx/Deepgram model name; Whisper names select "
        "a local model (docs/transcription.md).")
    model: str | None = Field(None, max_length=256, description="Google model name.")
    final_model: str | None = Field(
        None, max_length=256, description="callstream's own: a model for this call's "
        "finals (two-pass; docs/transcription.md).")
    hints: list[str] | None = Field(None, max_length=100)
    keyterms: list[str] | None = Field(None, max_length=100)


class TranscriptionStartRequest(CommandBody):
    transcription_engine: TranscriptionEngineName = "Google"
    transcription_engine_config: TranscriptionEngineConfig | None = None
    transcription_tracks: Literal["inbound", "outbound", "both"] = "inbound"

    def spec(self) -> TranscriptionSpec:
        config = self.transcription_engine_config or TranscriptionEngineConfig()
        return TranscriptionSpec(
            transcription_engine=self.transcription_engine,
            transcription_tracks=self.transcription_tracks,
            language=config.language,
            interim_results=config.interim_results,
            transcription_model=config.transcription_model,
            model=config.model,
            hints=tuple(config.hints or ()),
            keyterms=tuple(config.keyterms or ()),
            final_model=config.final_model,
        )

    def to_request(self) -> TranscriptionStart:
        return TranscriptionStart(command_id=self.command_id, client_state=self.client_state,
                                  transcription=self.spec())


class TranscriptionStopRequest(CommandBody):
    """Only the common fields (``command_id``, ``client_state``)."""

    def to_request(self) -> TranscriptionStop:
        return TranscriptionStop(command_id=self.command_id, client_state=self.client_state)
