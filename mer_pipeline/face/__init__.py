"""The face stage: detection, eye-aligned crops and frame encoders for sampled frames.

Modules:

- :mod:`~mer_pipeline.face.detect`: Haar-cascade detection (with tracking) and crops;
- :mod:`~mer_pipeline.face.geometry`: eye alignment, Procrustes landmarks, mean shape;
- :mod:`~mer_pipeline.face.crops`: a clip's face crops (:func:`face_crops`, :class:`FaceCrops`);
- :mod:`~mer_pipeline.face.encoders`: the :class:`FrameEncoder` protocol and the registry
  :data:`FRAME_ENCODERS` (``expression``, ``landmarks``, ``vggface``);
- :mod:`~mer_pipeline.face.extractor`: the per-clip task (:class:`FaceFeatureExtractor`)
  and pooling over frames.

Attention pooling over frames is learnt from labels by
:class:`mer_pipeline.fusion.MultimodalEmotionClassifier`.
"""
from ..exceptions import NoFaceError
from .crops import FaceCrops, face_crops
from .detect import CROP_MAX_SIDE, crop_face, detect_faces
from .encoders import (FER_CLASSES, FRAME_ENCODERS, ExpressionEncoder, FrameEncoder,
                       LandmarkEncoder, VGGFaceEncoder, encoders_with_prefixes, fer_model_path,
                       make_encoder)
from .extractor import FaceFeatureExtractor, pool_frames
from .geometry import ALIGNED_EYES, eye_alignment, mean_shape, normalise_landmarks, similarity_fit

__all__ = ["NoFaceError", "FaceCrops", "detect_faces", "crop_face", "face_crops",
           "eye_alignment", "similarity_fit", "mean_shape", "normalise_landmarks",
           "ALIGNED_EYES", "FRAME_ENCODERS", "FrameEncoder", "make_encoder",
           "encoders_with_prefixes", "ExpressionEncoder", "LandmarkEncoder", "VGGFaceEncoder",
           "FaceFeatureExtractor", "pool_frames", "fer_model_path", "FER_CLASSES",
           "CROP_MAX_SIDE"]
