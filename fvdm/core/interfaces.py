"""The interfaces every plugin kind implements.

Layout conventions (the same in every part of fvdm):
  x   : (B, F, C, H, W)  video or latent, always this layout
  t   : (B, F)           float per-frame level; 0 = clean, 1 = pure noise
  S   : (K+1, F)         sampling matrix; row k = levels at step k, columns non-increasing
  ctx : (B, F) bool      frames given as context

Plugins are classes constructed as ``cls(cfg)`` from their nested pydantic
``Config`` (``extra="forbid"``) and registered with ``registry.add(name, cls)``.
These Protocols are structural: a plugin does not need to inherit from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # sampling_context imports these interfaces: a type-only import here
    from fvdm.core.sampling_context import SamplingContext


class PluginConfig(BaseModel):
    """Base for plugin Configs: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class BackboneConfig(PluginConfig):
    """The contract between a backbone and the build; every backbone's ``Config`` extends it.

    The build (``fvdm.core.build.backbone_spec``) fills the five shape fields from the data, the
    autoencoder and the noise schedule when a config leaves them out, and checks them when it gives
    them; a subclass sets its own defaults and bounds. ``conditioning`` declares what the model
    consumes besides x and t: ``"class"`` (labels y (B,)) and/or ``"text"`` (``encoder_hidden_states``
    (B, L, text_dim)); ``guidance_dropout`` says how often training drops each for classifier-free
    guidance. ``pretrained`` names a local weights directory read once, when a fresh run starts or a
    config is sampled without a run; checkpoints then hold the weights.
    """

    #: what the model consumes besides x and t; a subclass overrides it
    conditioning: ClassVar[frozenset[str]] = frozenset()

    in_channels: int | None = Field(None, ge=1, description="latent channels per frame (the build fills it)")
    input_size: int | None = Field(None, ge=1, description="latent height = width (the build fills it)")
    num_frames: int | None = Field(None, ge=1, description="frame capacity (the build fills it with the clip length)")
    num_classes: int = Field(0, ge=0, description="0 = no class labels (the build fills it from the data)")
    learn_sigma: bool = Field(False, description="output 2C channels (the build sets it from the noise schedule)")
    pretrained: str | None = Field(None, description="local weights directory read at the start of a fresh run "
                                                     "(never downloaded); checkpoints then hold the weights")

    def guidance_dropout(self) -> dict[str, float]:
        """Training dropout per conditioning kind (``{"class": 0.1}``): how classifier-free guidance is learned."""
        return {}


#: ``model_fn(x (B,F,C,H,W), t (B,F)) -> raw model output (B,F,C',H,W)``; conditioning is closed over.
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class Backbone(Protocol):
    """Denoiser ``forward(x (B,F,C,H,W), t (B,F), y (B,) | None) -> (B,F,C_out,H,W)``.

    ``C_out = 2*C`` when the model learns its variance (DiT/Latte hybrid loss).
    """

    in_channels: int
    out_channels: int
    num_frames: int  # frame capacity (temporal position embeddings)
    input_size: int
    num_classes: int  # 0 = unconditional

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class NoiseSchedule(Protocol):
    """Forward process with per-frame levels ``t`` (B, F) in [0, 1].

    Discrete schedules (DDPM) map ``t`` to integer steps ``n = round(t * (T - 1))``
    inside, at the boundary only.
    """

    prediction: str  # "epsilon" | "v" | "x0" | "flow"

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame signal and noise scales, each (B, F): x_t = alpha x0 + sigma eps."""
        ...

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def loss(
        self, model_out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Per-frame training loss (B, F), weighting included; the engine masks and averages."""
        ...

    def snap(self, t: torch.Tensor) -> torch.Tensor:
        """Map training draws u ~ U[0, 1] onto the schedule's grid (identity if continuous)."""
        ...

    def predict_x0_eps(
        self, model_out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the raw model output at (xt, t) into (x0_hat, eps_hat)."""
        ...


@runtime_checkable
class VTVStrategy(Protocol):
    """Training timestep strategy: ``strategy(B, F, *, generator, device) -> t (B, F)`` in [0, 1].

    Stateless: the output depends only on the arguments and the generator state.
    """

    def __call__(
        self, batch_size: int, num_frames: int, *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor: ...


@runtime_checkable
class SamplingSchedule(Protocol):
    """Builds the sampling matrix ``S`` (rows, F) for K steps per frame over F frames.

    ``standard`` has K+1 rows; pyramid-style builders have more (later frames start
    later). Context columns are 0; each column is non-increasing.
    """

    def __call__(
        self, num_steps: int, num_frames: int, *, context: torch.Tensor | None = None,
        num_timesteps: int | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class Sampler(Protocol):
    """One step from per-frame levels ``t_from`` to ``t_to`` (each (B, F)).

    Frames with ``t_to == t_from`` are returned bit-identical. Stateless; a sampler that
    needs earlier steps is a :class:`MultistepSampler`.
    """

    def step(
        self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
        schedule: NoiseSchedule, generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class MultistepSampler(Protocol):
    """A sampler that needs earlier steps (DPM-Solver++ 2M, UniPC): its history is explicit state.

    ``init_state(x)`` makes the state before the first step; ``step(..., state=s)`` returns
    ``(x_next, new_state)``. The state is per frame (frames move at their own levels) and
    frames whose level does not change keep their x and their state.
    """

    def init_state(self, x: torch.Tensor) -> Any: ...

    def step(
        self, model_fn: ModelFn, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor, *,
        schedule: NoiseSchedule, generator: torch.Generator | None = None, state: Any,
    ) -> tuple[torch.Tensor, Any]: ...


@runtime_checkable
class Task(Protocol):
    """A zero-shot task: turns user inputs into a sampled video (B, N, C, H, W).

    ``sampling`` is a ``fvdm.core.sampling_context.SamplingContext`` (model, schedule, sampler,
    matrix builder, shape, steps, generator, ...); see docs/sampling.md for the inputs
    each task reads.
    """

    def run(self, sampling: SamplingContext, inputs: Mapping[str, Any]) -> torch.Tensor: ...


@runtime_checkable
class VideoDataset(Protocol):
    """Yields ``{"video": (F, C, H, W) float in [-1, 1], "key": str, "label"?: int}``."""

    num_frames: int
    channels: int
    resolution: int
    num_classes: int

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...


@runtime_checkable
class AttentionKernel(Protocol):
    """``kernel(q, k, v, *, mask=None, causal=False, scale=None) -> out``, all (B, N, H, D).

    ``mask``: bool (True = attend) or additive float tensor broadcastable to (B, H, N, N),
    or a ``fvdm.core.attention.BlockCausalMask``.
    """

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: Any = None,
        causal: bool = False, scale: float | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """Videos uint8 (B, F, C, H, W) -> features (B, dim); identified by id and weights hash."""

    dim: int
    extractor_id: str
    weights_sha256: str

    def __call__(self, videos: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Evaluator(Protocol):
    """Computes a metric; returns a dict with the value and its provenance."""

    def evaluate(self, fake: Any, real: Any, **kwargs: Any) -> dict[str, Any]: ...


@runtime_checkable
class BenchmarkSuite(Protocol):
    """A benchmark suite run by ``fvdm bench run NAME``; returns JSON-able results.

    ``run`` may also accept ``plugins=`` and ``threads=`` keywords; the runner passes
    them when the signature asks for them (fvdm/bench/runner.py).
    """

    def run(self, out_dir: Any, *, quick: bool = False, seed: int = 0) -> dict[str, Any]: ...


@runtime_checkable
class Autoencoder(Protocol):
    """Pixel <-> latent map: (B, F, C, H, W) <-> (B, f, c, H/d, W/d).

    Per-frame autoencoders (identity, SD VAE) keep f = F. A video VAE may also compress time: it
    declares ``temporal_downsample`` r (absent = 1) and ``causal`` (absent = False). A causal VAE
    (Wan's) encodes the first frame alone and each later latent from r pixel frames, so F = 1 + r k
    pixel frames become f = 1 + k latents; a non-causal one maps F = r k to k. ``fvdm.core.temporal``
    turns this into frame counts and maps given pixel frames to given latent frames.
    """

    latent_channels: int
    downsample: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Prompts -> embeddings (B, L, dim) for a text-conditioned backbone's cross-attention.

    ``encode`` pads every prompt to ``max_length`` tokens with zero rows past its own tokens (what
    Wan's pipeline does with umT5), so a prompt and its negative batch together. ``encoder_id``
    names the encoder (and its weights) in provenance and in packed shards.
    """

    dim: int
    max_length: int
    encoder_id: str

    def encode(self, prompts: Sequence[str]) -> torch.Tensor: ...


INTERFACES: dict[str, type] = {
    "backbones": Backbone,
    "noise_schedules": NoiseSchedule,
    "vtv_strategies": VTVStrategy,
    "samplers": Sampler,
    "sampling_schedules": SamplingSchedule,
    "tasks": Task,
    "datasets": VideoDataset,
    "attention_kernels": AttentionKernel,
    "evaluators": Evaluator,
    "feature_extractors": FeatureExtractor,
    "benchmarks": BenchmarkSuite,
    "autoencoders": Autoencoder,
    "text_encoders": TextEncoder,
}

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper()] + ["ModelFn"]

