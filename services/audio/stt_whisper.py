"""The Whisper engine: any ``WhisperForConditionalGeneration`` checkpoint, 30 s windows at a time.

Long audio is read the way OpenAI's reference decoder reads it: decode a 30 s window with
timestamp tokens, keep the segments closed by timestamp pairs, and start the next window where the
last complete segment ended (or after the window, when it ended cleanly). Each window's segments
are final as soon as it is decoded, so they are handed out window by window. Cancellation is
checked between generated tokens.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from genmesh.errors import Cancelled, InvalidArgument, ModelUnavailable

from .stt import Segment, SpeechToText, TranscribeOptions, Word, compression_ratio

TIME_PRECISION = 0.02  # seconds per timestamp token
# OpenAI's silence rule: a window is dropped when it is likely silence and decoded poorly.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# A window whose segments end sooner than this is consumed whole, so decoding always advances.
MIN_ADVANCE_S = 1.0


@dataclass(frozen=True)
class _Window:
    tokens: list[int]  # generated ids, without the decoder prompt and end of text
    logprob: float  # mean log-probability of the generated ids (end of text included)
    times: list[float] | None  # per-token start times within the window (word timestamps)


class WhisperSTT(SpeechToText):
    """Recognition and translation with a Whisper checkpoint loaded by ``from_pretrained``."""

    sample_rate = 16000

    def __init__(self, model: object, processor: object) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer  # type: ignore[attr-defined]
        self.features = processor.feature_extractor  # type: ignore[attr-defined]
        config = model.generation_config  # type: ignore[attr-defined]
        self._lang_to_id: dict[str, int] = dict(getattr(config, "lang_to_id", None) or {})
        self._multilingual = bool(getattr(config, "is_multilingual", False) and self._lang_to_id)
        tasks = getattr(config, "task_to_id", None) or {}
        self._translates = self._multilingual and "translate" in tasks
        self._sot = config.decoder_start_token_id
        eos = config.eos_token_id
        self._eot = eos[0] if isinstance(eos, list) else eos
        self._timestamp_begin = config.no_timestamps_token_id + 1
        vocab = self.tokenizer.get_vocab()
        self._no_speech = vocab.get("<|nospeech|>", vocab.get("<|nocaptions|>"))
        self.window_samples = int(self.features.n_samples)
        self._eager_lock = threading.Lock()
        self._max_prompt = model.config.max_target_positions // 2 - 1  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu",
                        dtype: torch.dtype | None = None) -> WhisperSTT:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        if not (Path(path) / "config.json").is_file():
            raise ModelUnavailable(f"no Whisper weights at {path}")
        model = WhisperForConditionalGeneration.from_pretrained(str(path), dtype=dtype)
        return cls(model.to(device).eval(), WhisperProcessor.from_pretrained(str(path)))

    @property
    def languages(self) -> frozenset[str]:
        if not self._multilingual:
            return frozenset({"en"})
        return frozenset(token.strip("<|>") for token in self._lang_to_id)

    @property
    def can_translate(self) -> bool:
        return self._translates or not self._multilingual

    # -- recognition -------------------------------------------------------------------------

    def _detect_language(self, audio: np.ndarray, cancel: threading.Event) -> str:
        if not self._multilingual:
            return "en"
        features, _ = self._features(audio[:self.window_samples])
        logits = self._first_logits(self._encode(features))
        ids = list(self._lang_to_id.values())
        best = ids[int(torch.argmax(logits[ids]))]
        return next(token for token, i in self._lang_to_id.items() if i == best).strip("<|>")

    def _segments(self, audio: np.ndarray, options: TranscribeOptions,
                  cancel: threading.Event) -> Iterator[Segment]:
        prompt_ids = self._prompt_ids(options.prompt)
        seek = 0
        while seek < len(audio):
            if cancel.is_set():
                raise Cancelled("transcription was cancelled")
            chunk = audio[seek:seek + self.window_samples]
            features, mask = self._features(chunk)
            encoded = self._encode(features)
            no_speech = self._no_speech_prob(self._first_logits(encoded))
            window = self._generate(encoded, mask, options, prompt_ids, cancel)
            offset = seek / self.sample_rate
            segments, consumed = self._split(window, len(chunk) / self.sample_rate)
            if no_speech > NO_SPEECH_THRESHOLD and window.logprob < LOGPROB_THRESHOLD:
                segments, consumed = [], len(chunk) / self.sample_rate  # silence
            for start, end, tokens, words in segments:
                text = self.tokenizer.decode([t for t in tokens if t < self._eot],
                                             skip_special_tokens=True).strip()
                if not text:
                    continue
                yield Segment(
                    id=0, start=offset + start, end=offset + end, text=text,
                    words=tuple(Word(w.word, offset + w.start, offset + w.end, w.probability)
                                for w in words) if options.word_timestamps else None,
                    seek=round(offset * 100), tokens=tuple(tokens),
                    temperature=options.temperature, avg_logprob=round(window.logprob, 4),
                    compression_ratio=round(compression_ratio(text), 4),
                    no_speech_prob=round(no_speech, 6))
            seek += max(int(round(consumed * self.sample_rate)), 1)

    def _features(self, chunk: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.features(chunk, sampling_rate=self.sample_rate, return_tensors="pt",
                               return_attention_mask=True)
        return (inputs.input_features.to(self.model.device, self.model.dtype),
                inputs.attention_mask.to(self.model.device))

    @torch.inference_mode()
    def _encode(self, features: torch.Tensor) -> object:
        return self.model.get_encoder()(features)

    @torch.inference_mode()
    def _first_logits(self, encoded: object) -> torch.Tensor:
        """Logits after the start-of-transcript token: language and no-speech live here."""
        start = torch.tensor([[self._sot]], device=self.model.device)
        out = self.model(encoder_outputs=encoded, decoder_input_ids=start, use_cache=False)
        return out.logits[0, -1].float()

    def _no_speech_prob(self, logits: torch.Tensor) -> float:
        if self._no_speech is None:
            return 0.0
        return float(torch.softmax(logits, dim=-1)[self._no_speech])

    def _prompt_ids(self, prompt: str | None) -> torch.Tensor | None:
        if not prompt:
            return None
        try:
            ids = self.tokenizer.get_prompt_ids(prompt, return_tensors="pt")
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="prompt") from None
        if len(ids) > self._max_prompt:  # keep <|startofprev|> and the end of the prompt
            ids = torch.cat([ids[:1], ids[len(ids) - self._max_prompt + 1:]])
        return ids.to(self.model.device)

    @torch.inference_mode()
    def _generate(self, encoded: object, mask: torch.Tensor, options: TranscribeOptions,
                  prompt_ids: torch.Tensor | None, cancel: threading.Event) -> _Window:
        kwargs: dict[str, object] = {}
        if self._multilingual:
            kwargs.update(language=options.language, task=options.task)
        with contextlib.ExitStack() as stack:
            if options.word_timestamps:
                kwargs.update(return_token_timestamps=True, attention_mask=mask)
                stack.enter_context(self._eager_attention())
            out = self.model.generate(
                encoder_outputs=encoded, return_timestamps=True, force_unique_generate_call=True,
                return_dict_in_generate=True, output_scores=True, prompt_ids=prompt_ids,
                temperature=options.temperature,
                stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]), **kwargs)
        if cancel.is_set():
            raise Cancelled("transcription was cancelled")
        scores = out["scores"]
        generated = out["sequences"][0, -len(scores):].tolist() if scores else []
        logprobs = [float(torch.log_softmax(step[0].float(), -1)[token])
                    for step, token in zip(scores, generated, strict=True)]
        finite = [lp for lp in logprobs if math.isfinite(lp)]
        times = None
        if options.word_timestamps and "token_timestamps" in out:
            times = out["token_timestamps"][0, -len(scores):].tolist() if scores else []
        end = generated.index(self._eot) if self._eot in generated else len(generated)
        return _Window(tokens=generated[:end], logprob=sum(finite) / max(len(finite), 1),
                       times=times[:end + 1] if times is not None else None)

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        """Word timestamps need attention weights, for which transformers switches the model to
        eager attention for good; switch back afterwards so other requests keep the fast kernel."""
        config = self.model.model.config
        with self._eager_lock:
            previous = config._attn_implementation
            try:
                yield
            finally:
                config._attn_implementation = previous

    def _split(self, window: _Window, duration: float
               ) -> tuple[list[tuple[float, float, list[int], list[Word]]], float]:
        """Cut a window's tokens at timestamp pairs; return the segments and seconds consumed."""
        tokens, begin = window.tokens, self._timestamp_begin
        is_time = [t >= begin for t in tokens]
        ends_single = len(tokens) >= 2 and is_time[-1] and not is_time[-2]
        cuts = [i + 1 for i in range(len(tokens) - 1) if is_time[i] and is_time[i + 1]]
        if cuts and ends_single:
            cuts.append(len(tokens))
        if not cuts:  # no closed pair: the whole window is one segment
            stamps = [self._time(t) for t, ts in zip(tokens, is_time, strict=True) if ts]
            end = stamps[-1] if stamps and stamps[-1] > 0 else duration
            return [(0.0, min(end, duration), tokens, self._words(window, 0, len(tokens), end))], \
                duration
        segments, last = [], 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = self._time(piece[0]) if is_time[last] else 0.0
            end = self._time(piece[-1]) if is_time[cut - 1] else duration
            if start < duration:  # segments placed after the end of the audio are hallucinated
                words = self._words(window, last, cut, end)
                segments.append((start, max(start, end), piece, words))
            last = cut
        if not segments:
            return [], duration
        consumed = duration if ends_single else segments[-1][1]
        if consumed < MIN_ADVANCE_S:
            consumed = duration
        return segments, min(consumed, duration)

    def _time(self, token: int) -> float:
        return (token - self._timestamp_begin) * TIME_PRECISION

    def _words(self, window: _Window, first: int, last: int, end: float) -> list[Word]:
        """Group the text tokens of ``tokens[first:last]`` into words timed by token timestamps."""
        if window.times is None:
            return []
        groups: list[list[int]] = []
        for i in range(first, last):
            token = window.tokens[i]
            if token >= self._eot:
                continue
            piece = self.tokenizer.convert_ids_to_tokens(token)
            if not groups or piece.startswith("Ġ") or piece.startswith(" "):
                groups.append([])
            groups[-1].append(i)
        words = []
        for group in groups:
            text = self.tokenizer.decode([window.tokens[i] for i in group]).strip()
            if not text:
                continue
            after = group[-1] + 1
            stop = window.times[after] if after < len(window.times) else end
            words.append(Word(word=text, start=window.times[group[0]], end=stop))
        return words


class _CancelCriteria(StoppingCriteria):
    """Stops generation at the next token once the request is cancelled."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor,
                 **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool,
                          device=input_ids.device)
