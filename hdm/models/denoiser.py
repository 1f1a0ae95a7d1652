"""The shared diffusion denoiser: a diffusers UNet2DModel with a diffusers noise schedule.

One network serves DDM (one-step or DDIM reconstruction of a "normal" image) and DAGM
(a few inflated-variance reverse steps that turn a crude composite into realistic
anomalous content); both go through `reverse`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn
from torch.nn import functional as F

from hdm.config import HDMConfig

StepHook = Callable[[torch.Tensor, int], torch.Tensor]


def build_unet(cfg: HDMConfig) -> UNet2DModel:
    """Plain conv blocks everywhere except the lowest resolution, where attention is cheap."""
    d = cfg.denoiser
    levels = len(d.block_out_channels)
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    channels = 3 * d.patch_size**2
    return UNet2DModel(
        sample_size=cfg.image_size // d.patch_size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=d.block_out_channels,
        layers_per_block=d.layers_per_block,
        norm_num_groups=d.norm_num_groups,
        attention_head_dim=d.attention_head_dim,
        num_train_timesteps=cfg.diffusion.num_train_timesteps,
    )


class Denoiser(nn.Module):
    """eps_theta(x_t, t) plus the schedule arithmetic around it."""

    def __init__(self, cfg: HDMConfig) -> None:
        super().__init__()
        diff = cfg.diffusion
        self.unet = build_unet(cfg)
        self.patch_size = cfg.denoiser.patch_size
        self.scheduler = DDPMScheduler(
            num_train_timesteps=diff.num_train_timesteps,
            beta_start=diff.beta_start,
            beta_end=diff.beta_end,
            beta_schedule=diff.beta_schedule,
            prediction_type=diff.prediction_type,
            clip_sample=False,
        )
        self.recon_timesteps = tuple(diff.recon_timesteps)
        self.recon_ddim_steps = diff.recon_ddim_steps
        self.train_t_range = (diff.train_t_min, diff.train_t_max)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(), persistent=False)
        # Fixed reconstruction noise, one image's worth per timestep, shared by every image in a
        # batch: a frame's score does not depend on what it was batched with.
        gen = torch.Generator().manual_seed(diff.noise_seed)
        noise = torch.randn(len(self.recon_timesteps), 1, 3, cfg.image_size, cfg.image_size, generator=gen)
        self.register_buffer("recon_noise", noise, persistent=False)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.patch_size == 1:
            return self.unet(x_t, t).sample
        eps = self.unet(F.pixel_unshuffle(x_t, self.patch_size), t).sample
        return F.pixel_shuffle(eps, self.patch_size)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        out = self(x_t, t).float()
        if self.prediction_type == "sample":
            return out
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * x_t - (1 - abar).sqrt() * out
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()

    def training_loss(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE against the configured target (noise, x0 or v) at random timesteps (the DDPM objective)."""
        lo, hi = self.train_t_range
        t = torch.randint(lo - 1, hi, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        if self.prediction_type == "sample":
            target = x0
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        return nn.functional.mse_loss(self(self.add_noise(x0, noise, t), t).float(), target)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """DDM's "normal" version of x: x0 estimates from each configured timestep, averaged."""
        total = torch.zeros_like(x)
        for i, t_s in enumerate(self.recon_timesteps):
            t = torch.full((x.shape[0],), t_s, device=x.device, dtype=torch.long)
            x_t = self.add_noise(x, self.recon_noise[i].expand_as(x), t)
            if self.recon_ddim_steps > 0:
                total += self.reverse(x_t, t_s, self.recon_ddim_steps)
            else:
                total += self.predict_x0(x_t, t)
        return (total / len(self.recon_timesteps)).clamp(-1, 1)

    def reverse(
        self,
        x_t: torch.Tensor,
        t_start: int,
        steps: int,
        eta: float = 0.0,
        variance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        hook: StepHook | None = None,
    ) -> torch.Tensor:
        """`steps` DDIM steps from t_start towards 0; returns the last x0 estimate.

        eta=1 makes each step stochastic like DDPM; variance_scale multiplies that noise's
        standard deviation (DAGM's (1 + tau) variance inflation is variance_scale = sqrt(1 + tau)).
        `hook(sample, t_prev)` may rewrite each intermediate sample (inpainting).
        """
        # from_config carries prediction_type over, so the DDIM step reads the output correctly.
        scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False, set_alpha_to_one=True)
        scheduler.set_timesteps(max(1, round(self.num_train_timesteps * steps / max(t_start, 1))))
        stride = self.num_train_timesteps // scheduler.num_inference_steps
        sample, t = x_t, t_start
        x0 = x_t
        for _ in range(steps):
            t_batch = torch.full((sample.shape[0],), t, device=sample.device, dtype=torch.long)
            eps = self(sample, t_batch).float()
            noise = None
            if eta > 0:
                noise = torch.randn(sample.shape, generator=generator).to(sample.device) * variance_scale
            out = scheduler.step(eps, t, sample, eta=eta, variance_noise=noise)
            sample, x0 = out.prev_sample, out.pred_original_sample
            t -= stride
            if t < 0:
                break
            if hook is not None:
                sample = hook(sample, t)
        return x0
