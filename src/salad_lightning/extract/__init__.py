"""Features from video files, the paper's way (§4.2): 25 fps, TV-L1 flow, two-stream I3D.

``salad-extract VIDEOS OUT`` (``python -m salad_lightning.extract``; ``extract/cli.py``)
writes one (T, D) float32 ``OUT/<video_id>.npy`` per video, feature ``i`` covering the
resampled frames ``[i * stride, i * stride + window)``, and ``OUT/features.json`` with
the settings that made them (``extract/geometry.py``), which is what the data layer
needs to map seconds to feature indices.

| module | job |
|---|---|
| ``video.py`` | decoding (PyAV), resampling by timestamps, resize and centre crop |
| ``flow.py`` | TV-L1 flow between consecutive frames (OpenCV contrib), clipped and scaled |
| ``i3d.py`` | ``InceptionI3d``, loading the public PyTorch port's weight files |
| ``backbones.py`` | ``build_backbone(name, weights)``: I3D and torchvision's video models |
| ``geometry.py`` | slices, ``features.json`` (read, check against expected settings) |
| ``stream.py`` | what a decoding worker sends: frames and flow in runs of whole slices |
| ``extractor.py`` | the pipeline: workers decode, the device runs the backbones, files |
| ``cli.py`` | the command |

PyAV and OpenCV are imported only when a video is read or flow computed
(``pip install salad-lightning[video]``).
"""

from salad_lightning.extract.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    build_backbone,
    load_backbone,
)
from salad_lightning.extract.extractor import (
    ExtractReport,
    extract_folder,
    extract_video,
    find_videos,
    plan_frames,
    settings_record,
)
from salad_lightning.extract.flow import TVL1Options
from salad_lightning.extract.geometry import (
    FEATURES_JSON,
    FeatureGeometry,
    FeatureSettingsError,
    check_features_json,
    geometry,
    num_slices,
    read_features_json,
    settings_mismatches,
)
from salad_lightning.extract.i3d import InceptionI3d, WeightsError
from salad_lightning.extract.video import VideoDecodeError, VideoInfo

__all__ = [
    "BACKBONES",
    "FEATURES_JSON",
    "Backbone",
    "BackboneSpec",
    "ExtractReport",
    "FeatureGeometry",
    "FeatureSettingsError",
    "InceptionI3d",
    "TVL1Options",
    "VideoDecodeError",
    "VideoInfo",
    "WeightsError",
    "build_backbone",
    "check_features_json",
    "extract_folder",
    "extract_video",
    "find_videos",
    "geometry",
    "load_backbone",
    "num_slices",
    "plan_frames",
    "read_features_json",
    "settings_mismatches",
    "settings_record",
]
