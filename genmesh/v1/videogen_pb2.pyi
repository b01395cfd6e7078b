from genmesh.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateVideoRequest(_message.Message):
    __slots__ = ("model_id", "prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "seed", "num_frames", "fps", "output_format", "preview_every", "image_url", "strength", "inline")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_INFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_frames: int
    fps: float
    output_format: str
    preview_every: int
    image_url: str
    strength: float
    inline: bool
    def __init__(self, model_id: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_inference_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., output_format: _Optional[str] = ..., preview_every: _Optional[int] = ..., image_url: _Optional[str] = ..., strength: _Optional[float] = ..., inline: _Optional[bool] = ...) -> None: ...

class VideoPreview(_message.Message):
    __slots__ = ("step", "image")
    STEP_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    step: int
    image: _common_pb2.Media
    def __init__(self, step: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.Media, _Mapping]] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.Media
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.Media, _Mapping]] = ...) -> None: ...

class GenerateVideoResult(_message.Message):
    __slots__ = ("video", "seed", "duration_seconds", "num_frames", "fps", "inference_time_seconds")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    video: _common_pb2.Media
    seed: int
    duration_seconds: float
    num_frames: int
    fps: float
    inference_time_seconds: float
    def __init__(self, video: _Optional[_Union[_common_pb2.Media, _Mapping]] = ..., seed: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., num_frames: _Optional[int] = ..., fps: _Optional[float] = ..., inference_time_seconds: _Optional[float] = ...) -> None: ...

class GenerateVideoEvent(_message.Message):
    __slots__ = ("progress", "log", "preview", "frame", "usage", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    log: _common_pb2.LogEntry
    preview: VideoPreview
    frame: VideoFrame
    usage: _common_pb2.Usage
    result: GenerateVideoResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., log: _Optional[_Union[_common_pb2.LogEntry, _Mapping]] = ..., preview: _Optional[_Union[VideoPreview, _Mapping]] = ..., frame: _Optional[_Union[VideoFrame, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., result: _Optional[_Union[GenerateVideoResult, _Mapping]] = ...) -> None: ...
