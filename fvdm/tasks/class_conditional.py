"""Class-conditional generation with classifier-free guidance (scale = SamplingContext.cfg_scale)."""

from __future__ import annotations

from fvdm.tasks.base import batch_of, sample_window
from fvdm.tasks.unconditional import Unconditional


class ClassConditional(Unconditional):
    """Generate F frames of class ``labels`` (B,) with CFG scale ``sampling.cfg_scale``."""

    needs = ("labels",)

    def check_sampling(self, sampling):
        super().check_sampling(sampling)
        if sampling.num_classes <= 0:
            raise ValueError("class_conditional needs a class-conditional checkpoint (num_classes > 0); "
                             "use the unconditional task")

    def run(self, sampling, inputs):
        self.require(inputs)
        self.check_sampling(sampling)
        n = int(inputs.get("num_frames") or self.cfg.num_frames or self.window(sampling))
        batch = batch_of(inputs, sampling)
        return sample_window(self, sampling, num_frames=n, batch=batch, y=self.labels(sampling, inputs, batch))
